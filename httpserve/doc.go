// Package httpserve owns how thaw's listeners treat connections: which
// limits a client cannot hold a connection past, and which it can.
//
// A client that sends its headers slowly, its body slowly (or never finishes
// it, chunked or not), or keeps an idle keep-alive open is cut after a
// bounded time, so a few hundred such clients cannot exhaust file
// descriptors. What is NOT bounded here: a request held while its deployment
// is cold (the hold timeout, enforced by the activator, bounds that) and a
// response stream (bounded by nothing: a long generation streams as long as
// it streams). That is why the body bound is a read deadline set per request
// and cleared once the body is read, not http.Server.ReadTimeout: net/http
// cancels a handler's context when ReadTimeout expires on an idle
// connection, which would cut held requests and streams.
package httpserve
