package xds

import (
	"context"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/delta/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// ads is the Aggregated Discovery Service over go-control-plane's state of
// the world and delta servers. (go-control-plane's pkg/server/v3 bundles
// this with every other xDS service, and with a module thaw does not
// depend on.)
type ads struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer
	sotw  sotw.Server
	delta delta.Server
}

func (a *ads) StreamAggregatedResources(st discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return a.sotw.StreamHandler(st, resource.AnyType)
}

func (a *ads) DeltaAggregatedResources(st discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return a.delta.DeltaStreamHandler(st, resource.AnyType)
}

// callbacks track connected Envoys and count NACKs: a request carrying
// ErrorDetail rejects the previous response.
type callbacks struct{ s *Server }

func (c callbacks) OnStreamOpen(context.Context, int64, string) error      { return nil }
func (c callbacks) OnDeltaStreamOpen(context.Context, int64, string) error { return nil }
func (c callbacks) OnStreamClosed(id int64, _ *core.Node)                  { c.s.gone(id) }
func (c callbacks) OnDeltaStreamClosed(id int64, _ *core.Node)             { c.s.gone(id) }
func (c callbacks) OnStreamResponse(context.Context, int64, *discovery.DiscoveryRequest, *discovery.DiscoveryResponse) {
}
func (c callbacks) OnStreamDeltaResponse(int64, *discovery.DeltaDiscoveryRequest, *discovery.DeltaDiscoveryResponse) {
}

func (c callbacks) OnStreamRequest(id int64, req *discovery.DiscoveryRequest) error {
	c.s.seen(id, req.GetNode())
	if e := req.GetErrorDetail(); e != nil {
		c.s.nack(req.GetTypeUrl(), req.GetResponseNonce(), req.GetVersionInfo(), e.GetMessage())
	}
	return nil
}

func (c callbacks) OnStreamDeltaRequest(id int64, req *discovery.DeltaDiscoveryRequest) error {
	c.s.seen(id, req.GetNode())
	if e := req.GetErrorDetail(); e != nil {
		c.s.nack(req.GetTypeUrl(), req.GetResponseNonce(), "", e.GetMessage())
	}
	return nil
}

func (s *Server) seen(stream int64, n *core.Node) {
	if n.GetId() == "" {
		return
	}
	s.mu.Lock()
	_, known := s.nodes[stream]
	s.nodes[stream] = n.GetId()
	s.mu.Unlock()
	if !known {
		s.log.Info("xds: envoy connected", "node", n.GetId(), "cluster", n.GetCluster(), "stream", stream)
	}
}

func (s *Server) gone(stream int64) {
	s.mu.Lock()
	n := s.nodes[stream]
	delete(s.nodes, stream)
	s.mu.Unlock()
	s.log.Info("xds: envoy disconnected", "node", n, "stream", stream)
}

// nack logs and counts a rejected response, with Envoy's own message.
func (s *Server) nack(typeURL, nonce, acceptedVersion, msg string) {
	s.nacks.Add(1)
	s.nackCount.Add(context.Background(), 1, metric.WithAttributes(attribute.String("type_url", typeURL)))
	s.log.Error("xds: envoy rejected configuration (NACK)", "type", typeURL, "nonce", nonce,
		"still_using_version", acceptedVersion, "envoy_error", msg)
}
