// Package lease elects one leader among thaw server replicas.
//
// A Lease campaigns for one lock shared by the replicas (a Locker: Nomad's
// Variables lock in production, nomad.Lock; Solo for thaw dev, where one
// process always leads). Each time it wins, it runs one *term*: the
// caller's lead function, with a context cancelled when the lock is lost.
// The components a term runs are built fresh for it; what outlives a term
// (allocations) is adopted by the next leader.
//
// # Safety
//
// The leader renews every TTL/4. It counts its lock from when the last
// successful Acquire or Renew was *sent*: if no renewal succeeds within TTL
// of that, or Nomad says another holds the lock, it cancels the term. Nomad
// frees an unrenewed lock only 2*TTL after the last renewal it saw (plus
// the lock delay), so an old leader has stopped at least TTL before any
// other replica can acquire: never two terms at once. A graceful stop
// releases the lock after the term has returned, and another replica
// leads within its Retry period.
//
// # Nomad unreachable
//
// Errors talking to the lock are logged once per change of error (not on
// every retry) and retried forever: a leader that cannot renew for TTL
// stops leading, a follower keeps campaigning, and whoever reaches Nomad
// first when it returns leads. Run never returns because Nomad is
// unreachable.
package lease
