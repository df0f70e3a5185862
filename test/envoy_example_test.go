package test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	"github.com/signetid/signet/agent/workloadapi"
)

// TestEnvoyExampleConfig loads examples/envoy/envoy.yaml as Envoy's own
// Bootstrap proto, with every typed_config unpacked and checked against
// Envoy's constraints (protoc-gen-validate), so a typo or a wrong field
// fails here rather than in a user's Envoy. Then it asks a running agent for
// exactly the secrets the example names, as that Envoy would.
func TestEnvoyExampleConfig(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "examples", "envoy", "envoy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatal(err)
	}
	var bs bootstrapv3.Bootstrap
	if err := (protojson.UnmarshalOptions{}).Unmarshal(js, &bs); err != nil {
		t.Fatalf("envoy.yaml is not an Envoy v3 bootstrap: %v", err)
	}
	var sds []*tlsv3.SdsSecretConfig
	validateTree(t, bs.ProtoReflect(), &sds)

	var agentCluster *clusterv3.Cluster
	for _, c := range bs.StaticResources.Clusters {
		if c.Name == "signet_agent" {
			agentCluster = c
		}
	}
	if agentCluster == nil {
		t.Fatal("no signet_agent cluster")
	}
	// gRPC needs HTTP/2 to the agent; without it Envoy speaks HTTP/1.1 and
	// every SDS call fails at run time.
	var opts upstreamhttpv3.HttpProtocolOptions
	if err := agentCluster.TypedExtensionProtocolOptions["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].UnmarshalTo(&opts); err != nil ||
		opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		t.Errorf("signet_agent does not use HTTP/2 (explicit_http_config.http2_protocol_options): %v", err)
	}
	pipe := agentCluster.LoadAssignment.Endpoints[0].LbEndpoints[0].GetEndpoint().Address.GetPipe().GetPath()
	if pipe != workloadapi.DefaultSocketPath {
		t.Errorf("signet_agent pipe %q, want the agent's default socket %q", pipe, workloadapi.DefaultSocketPath)
	}
	var names []string
	for _, s := range sds {
		svc := s.SdsConfig.GetApiConfigSource().GetGrpcServices()
		if len(svc) != 1 || svc[0].GetEnvoyGrpc().GetClusterName() != "signet_agent" {
			t.Errorf("SDS secret %q is not fetched from signet_agent", s.Name)
		}
		if !slices.Contains(names, s.Name) {
			names = append(names, s.Name)
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"ROOTCA", "default"}) {
		t.Fatalf("SDS names %v", names)
	}

	d := startDev(t)
	conn, err := grpc.NewClient(d.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := secretv3.NewSecretDiscoveryServiceClient(conn).FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{
		Node: &corev3.Node{Id: bs.Node.Id, Cluster: bs.Node.Cluster, UserAgentName: "envoy",
			UserAgentVersionType: &corev3.Node_UserAgentBuildVersion{UserAgentBuildVersion: &corev3.BuildVersion{
				Version: &typev3.SemanticVersion{MajorNumber: 1, MinorNumber: 30}}}},
		ResourceNames: names,
	})
	if err != nil {
		t.Fatalf("the agent refused the example's secrets: %v", err)
	}
	var got []string
	for _, a := range resp.Resources {
		var s tlsv3.Secret
		if err := a.UnmarshalTo(&s); err != nil {
			t.Fatal(err)
		}
		if err := s.ValidateAll(); err != nil {
			t.Errorf("secret %q: %v", s.Name, err)
		}
		got = append(got, s.Name)
	}
	slices.Sort(got)
	if !slices.Equal(got, names) {
		t.Errorf("agent sent %v, want %v", got, names)
	}
}

// validateTree runs Envoy's validation on m and on every message packed in
// an Any inside it (the generated validators recurse into fields but not
// into Any), and collects the SDS secret configs.
func validateTree(t *testing.T, m protoreflect.Message, sds *[]*tlsv3.SdsSecretConfig) {
	t.Helper()
	if v, ok := m.Interface().(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			t.Errorf("%s: %v", m.Descriptor().FullName(), err)
		}
	}
	walkTree(t, m, sds)
}

func walkTree(t *testing.T, m protoreflect.Message, sds *[]*tlsv3.SdsSecretConfig) {
	t.Helper()
	msg := m.Interface()
	if s, ok := msg.(*tlsv3.SdsSecretConfig); ok {
		*sds = append(*sds, s)
	}
	if a, ok := msg.(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			t.Errorf("typed_config %s: %v", a.TypeUrl, err)
			return
		}
		validateTree(t, inner.ProtoReflect(), sds)
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := 0; i < v.List().Len(); i++ {
				walkTree(t, v.List().Get(i).Message(), sds)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				walkTree(t, mv.Message(), sds)
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			walkTree(t, v.Message(), sds)
		}
		return true
	})
}
