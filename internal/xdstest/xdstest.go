// Package xdstest asks an xDS server for configuration the way Envoy does,
// for the tests of thaw's ADS server: the xds package's unit tests and the
// Envoy suite in test/envoy.
package xdstest

import (
	"context"
	"fmt"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/anypb"
)

// FetchListeners opens an ADS stream to addr over creds as Envoy node
// node, asks for the listeners and returns the first response's
// resources. The error is the first the connection, the stream or the
// server gave (a TLS refusal shows up here); ctx bounds the whole exchange.
func FetchListeners(ctx context.Context, addr string, creds credentials.TransportCredentials, node string) ([]*anypb.Any, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("xds client for %s: %w", addr, err)
	}
	defer conn.Close()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	if err := st.Send(&discovery.DiscoveryRequest{Node: &core.Node{Id: node}, TypeUrl: resource.ListenerType}); err != nil {
		return nil, err
	}
	resp, err := st.Recv()
	if err != nil {
		return nil, err
	}
	return resp.GetResources(), nil
}
