package test

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/signetid/signet/agent"
	"github.com/signetid/signet/server"
)

// manifestDecoder decodes strictly (an unknown or misspelt field fails, as
// the API server's field validation would) into the built-in Kubernetes
// types and CustomResourceDefinitions.
func manifestDecoder(t *testing.T) runtime.Decoder {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := errors.Join(clientgoscheme.AddToScheme(scheme), apiextensionsv1.AddToScheme(scheme)); err != nil {
		t.Fatal(err)
	}
	return json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme, json.SerializerOptions{Yaml: true, Strict: true})
}

// decodeManifests splits a multi-document YAML stream and decodes every
// document into its typed object; source names the stream in errors.
func decodeManifests(t *testing.T, source string, data []byte) []runtime.Object {
	t.Helper()
	dec := manifestDecoder(t)
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []runtime.Object
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", source, i, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, _, err := dec.Decode(doc, nil, nil)
		if err != nil {
			t.Errorf("%s: document %d: %v", source, i, err)
			continue
		}
		out = append(out, obj)
	}
}

// stripComments drops whole-line YAML comments (a document of only
// comments is empty, e.g. a template whose body is switched off).
func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for line := range bytes.Lines(doc) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			b.Write(line)
		}
	}
	return b.Bytes()
}

// kustomizeBuild runs kustomize (the library behind `kubectl apply -k`) on
// dir and decodes what it renders.
func kustomizeBuild(t *testing.T, dir string) []runtime.Object {
	t.Helper()
	objs, err := tryKustomizeBuild(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func tryKustomizeBuild(t *testing.T, dir string) ([]runtime.Object, error) {
	t.Helper()
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	y, err := m.AsYaml()
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	return decodeManifests(t, "kustomize build "+dir, y), nil
}

// objectKey is how Kubernetes tells objects apart.
type objectKey struct{ Kind, Namespace, Name string }

func keyOf(t *testing.T, o runtime.Object) objectKey {
	t.Helper()
	m, err := meta.Accessor(o)
	if err != nil {
		t.Fatal(err)
	}
	return objectKey{fmt.Sprintf("%T", o), m.GetNamespace(), m.GetName()}
}

// object returns the one object of type T named name, failing the test
// when there is none.
func object[T runtime.Object](t *testing.T, objs []runtime.Object, name string) T {
	t.Helper()
	for _, o := range objs {
		if v, ok := o.(T); ok && keyOf(t, o).Name == name {
			return v
		}
	}
	var zero T
	t.Fatalf("no %T named %s", zero, name)
	return zero
}

// signetSystem is what checkSignetSystem learned from a rendered install.
type signetSystem struct {
	config    server.Config
	file      server.FileConfig
	namespace string
	server    *appsv1.StatefulSet
	agent     *appsv1.DaemonSet
	// agentFile is the agents' --config file as the agent parses it; nil
	// when they take flags alone.
	agentFile *agent.Config
}

// checkSignetSystem checks that a rendered Signet install fits together,
// whichever tool rendered it: the server's config is one the real parser
// accepts, the agents attest to a cluster it knows with a token it accepts,
// name its trust domain, reach its Service, read the bundle it publishes,
// the datastore is wired as its type needs, the server's RBAC grants what
// its config asks of the cluster, and every flag exists.
func checkSignetSystem(t *testing.T, objs []runtime.Object) signetSystem {
	t.Helper()
	var s signetSystem
	s.server = object[*appsv1.StatefulSet](t, objs, "signet-server")
	s.agent = object[*appsv1.DaemonSet](t, objs, "signet-agent")
	s.namespace = s.server.Namespace
	if s.namespace == "" {
		t.Fatal("the server StatefulSet has no namespace")
	}

	// The config the server reads: the ConfigMap mounted at --config.
	srvPod := s.server.Spec.Template.Spec
	srv := srvPod.Containers[0]
	confPath := ""
	if i := slices.Index(srv.Args, "--config"); i >= 0 && i+1 < len(srv.Args) {
		confPath = srv.Args[i+1]
	}
	cm := mountedConfigMap(t, srvPod, srv, filepath.Dir(confPath))
	conf, ok := object[*corev1.ConfigMap](t, objs, cm).Data[filepath.Base(confPath)]
	if !ok {
		t.Fatalf("server --config %s: ConfigMap %s has no key %s", confPath, cm, filepath.Base(confPath))
	}
	var err error
	if s.file, err = server.ParseConfigFile([]byte(conf)); err != nil {
		t.Fatalf("server.conf: %v", err)
	}
	if s.config, err = s.file.Resolve(); err != nil {
		t.Fatalf("server.conf: %v", err)
	}
	cfg := s.config

	pod := s.agent.Spec.Template.Spec
	ctr := pod.Containers[0]
	cluster := argValue(ctr.Args, "k8s-psat-cluster")
	i := slices.IndexFunc(cfg.K8sPSAT, func(c server.K8sPSATCluster) bool { return c.Name == cluster })
	if i < 0 {
		t.Fatalf("agent's --k8s-psat-cluster=%q is not a k8s_psat cluster of the server", cluster)
	}
	psat := cfg.K8sPSAT[i]
	if sa := s.agent.Namespace + ":" + pod.ServiceAccountName; !slices.Contains(psat.ServiceAccountAllowList, sa) {
		t.Errorf("agent service account %s is not in the server's allow list %v", sa, psat.ServiceAccountAllowList)
	}
	if td := argValue(ctr.Args, "trust-domain"); td != cfg.TrustDomain.Name() {
		t.Errorf("agent --trust-domain=%s, server %s", td, cfg.TrustDomain.Name())
	}
	checkAgentReachesServer(t, objs, s, argValue(ctr.Args, "server"))
	s.agentFile = agentConfigFile(t, objs, pod, ctr)

	tokenPath := argValue(ctr.Args, "k8s-psat-token-path")
	if tokenPath == "" {
		tokenPath = agent.DefaultPSATTokenPath
	}
	bundlePath := ""
	for _, v := range pod.Volumes {
		m := slices.IndexFunc(ctr.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == v.Name })
		if m < 0 {
			continue
		}
		mount := ctr.VolumeMounts[m].MountPath
		switch {
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				if sat := src.ServiceAccountToken; sat != nil && filepath.Join(mount, sat.Path) == tokenPath {
					if sat.Audience != psat.Audience {
						t.Errorf("agent token audience %q, server wants %q", sat.Audience, psat.Audience)
					}
					tokenPath = ""
				}
			}
		case v.ConfigMap != nil && cfg.K8sBundle != nil && v.ConfigMap.Name == cfg.K8sBundle.ConfigMap:
			key := cfg.K8sBundle.Key
			if key == "" {
				key = "bundle.pem"
			}
			bundlePath = filepath.Join(mount, key)
		}
	}
	if tokenPath != "" {
		t.Errorf("no projected service account token is mounted at %s", tokenPath)
	}
	if cfg.K8sBundle == nil || argValue(ctr.Args, "trust-bundle") != bundlePath {
		t.Errorf("agent --trust-bundle=%s is not the server's k8s_bundle ConfigMap (mounted at %q)", argValue(ctr.Args, "trust-bundle"), bundlePath)
	} else if cfg.K8sBundle.Namespace != s.agent.Namespace {
		t.Errorf("server publishes the bundle in namespace %s, agents run in %s", cfg.K8sBundle.Namespace, s.agent.Namespace)
	}

	checkDatastore(t, s)
	var files []string // every file server.conf names
	if u := cfg.UpstreamAuthority; u != nil {
		files = append(files, u.CertFile, u.KeyFile, u.BundleFile)
	}
	if o := cfg.OIDCDiscovery; o != nil {
		files = append(files, o.CertFile, o.KeyFile)
		checkOIDCDiscoveryServed(t, objs, s)
	}
	for _, f := range files {
		if f != "" && !mounted(srvPod, srv.Name, f) {
			t.Errorf("server.conf file %s is on no volume of the server container", f)
		}
	}
	checkServerRBAC(t, objs, s)

	for _, p := range podSpecs(objs) {
		for _, c := range p.spec.Containers {
			if strings.Contains(c.Image, "signetid/signet") {
				checkFlagsExist(t, c.Args)
			}
		}
	}
	return s
}

// agentConfigFile returns the agent's --config file, from the ConfigMap
// mounted there, as the agent's own parser reads it (nil without
// --config). A key that a flag also sets is an error: the flag wins, so the
// file's value would be dead.
func agentConfigFile(t *testing.T, objs []runtime.Object, pod corev1.PodSpec, ctr corev1.Container) *agent.Config {
	t.Helper()
	path := argValue(ctr.Args, "config")
	if path == "" {
		return nil
	}
	cm := mountedConfigMap(t, pod, ctr, filepath.Dir(path))
	conf, ok := object[*corev1.ConfigMap](t, objs, cm).Data[filepath.Base(path)]
	if !ok {
		t.Fatalf("agent --config=%s: ConfigMap %s has no key %s", path, cm, filepath.Base(path))
	}
	cfg, err := agent.ParseConfig([]byte(conf))
	if err != nil {
		t.Fatalf("agent --config=%s (ConfigMap %s): %v\n%s", path, cm, err, conf)
	}
	inFile := setHCLKeys(reflect.ValueOf(*cfg))
	for _, a := range ctr.Args {
		flag, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		key, ok := agentFlagKeys[flag]
		if !ok {
			key = strings.ReplaceAll(flag, "-", "_")
		}
		if slices.Contains(inFile, key) {
			t.Errorf("agent --%s and its config file's %s both set %s: the flag wins, the file's value is dead", flag, path, key)
		}
	}
	return cfg
}

// agentFlagKeys names the config key of each `signet agent run` flag whose
// key is not the flag's name with _ for -.
var agentFlagKeys = map[string]string{
	"server": "server_address", "trust-bundle": "trust_bundle_path", "socket": "socket_path",
	"kubelet-ca": "kubelet_ca_path", "x509pop-cert": "x509pop_cert_path", "x509pop-key": "x509pop_key_path",
}

// setHCLKeys returns the hcl tags of the struct's fields that are not zero.
func setHCLKeys(v reflect.Value) []string {
	var keys []string
	for i := range v.NumField() {
		tag, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("hcl"), ",")
		if tag != "" && tag != "-" && !v.Field(i).IsZero() {
			keys = append(keys, tag)
		}
	}
	return keys
}

// mountedConfigMap names the ConfigMap that c mounts at dir.
func mountedConfigMap(t *testing.T, pod corev1.PodSpec, c corev1.Container, dir string) string {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.MountPath != dir {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil {
				return v.ConfigMap.Name
			}
		}
	}
	t.Fatalf("container %s mounts no ConfigMap at %s", c.Name, dir)
	return ""
}

// checkAgentReachesServer checks that the agents' --server is the server's
// Service, on the port that leads to the server's listen port.
func checkAgentReachesServer(t *testing.T, objs []runtime.Object, s signetSystem, addr string) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("agent --server=%s: %v", addr, err)
	}
	name, ns, _ := strings.Cut(strings.TrimSuffix(host, ".svc"), ".")
	if ns != s.namespace {
		t.Errorf("agent --server=%s: not the server's namespace %s", addr, s.namespace)
	}
	svc := object[*corev1.Service](t, objs, name)
	_, listenPort, err := net.SplitHostPort(s.config.Listen)
	if err != nil {
		t.Fatalf("server listen %s: %v", s.config.Listen, err)
	}
	for _, p := range svc.Spec.Ports {
		if strconv.Itoa(int(p.Port)) != port {
			continue
		}
		for _, cp := range s.server.Spec.Template.Spec.Containers[0].Ports {
			if cp.Name == p.TargetPort.String() || p.TargetPort.IntValue() == int(cp.ContainerPort) {
				if strconv.Itoa(int(cp.ContainerPort)) != listenPort {
					t.Errorf("Service %s:%s leads to container port %d, the server listens on %s", name, port, cp.ContainerPort, listenPort)
				}
				return
			}
		}
	}
	t.Errorf("agent --server=%s: Service %s has no port %s leading to a server port", addr, name, port)
}

// checkOIDCDiscoveryServed checks that the OIDC discovery provider is
// reachable: a container port of the server is its listen port, a Service
// selecting the server pods leads to it, and every Ingress to that Service
// serves the issuer's host and path.
func checkOIDCDiscoveryServed(t *testing.T, objs []runtime.Object, s signetSystem) {
	t.Helper()
	_, port, err := net.SplitHostPort(s.config.OIDCDiscovery.Listen)
	if err != nil {
		t.Fatalf("oidc_discovery listen %s: %v", s.config.OIDCDiscovery.Listen, err)
	}
	i := slices.IndexFunc(s.server.Spec.Template.Spec.Containers[0].Ports, func(p corev1.ContainerPort) bool {
		return strconv.Itoa(int(p.ContainerPort)) == port
	})
	if i < 0 {
		t.Fatalf("oidc_discovery listens on %s, not a port of the server container", port)
	}
	cp := s.server.Spec.Template.Spec.Containers[0].Ports[i]
	services := map[string]map[string]bool{} // Service name -> its port names and numbers leading to cp
	for _, o := range objs {
		svc, ok := o.(*corev1.Service)
		if !ok || len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(s.server.Spec.Template.Labels)) {
			continue
		}
		for _, p := range svc.Spec.Ports {
			if p.TargetPort.String() == cp.Name || p.TargetPort.IntValue() == int(cp.ContainerPort) {
				if services[svc.Name] == nil {
					services[svc.Name] = map[string]bool{}
				}
				services[svc.Name][p.Name] = true
				services[svc.Name][strconv.Itoa(int(p.Port))] = true
			}
		}
	}
	if len(services) == 0 {
		t.Errorf("no Service leads to the OIDC discovery port %s", port)
	}
	iss, err := url.Parse(s.config.JWTIssuer)
	if err != nil {
		t.Fatalf("jwt_issuer: %v", err)
	}
	for _, o := range objs {
		ing, ok := o.(*networkingv1.Ingress)
		if !ok {
			continue
		}
		for _, r := range ing.Spec.Rules {
			if r.HTTP == nil {
				continue
			}
			for _, p := range r.HTTP.Paths {
				b := p.Backend.Service
				if b == nil || services[b.Name] == nil {
					continue
				}
				if !services[b.Name][b.Port.Name] && !services[b.Name][strconv.Itoa(int(b.Port.Number))] {
					t.Errorf("Ingress %s: Service %s port %+v does not lead to the OIDC discovery port", ing.Name, b.Name, b.Port)
				}
				if want := cmp.Or(iss.Path, "/"); r.Host != iss.Hostname() || p.Path != want {
					t.Errorf("Ingress %s routes %s%s to the OIDC discovery provider; jwt_issuer is %s", ing.Name, r.Host, p.Path, s.config.JWTIssuer)
				}
			}
		}
	}
}

// checkDatastore checks the server's store: SQLite is one server with its
// temporary files on a volume; PostgreSQL keeps the password out of the
// ConfigMap, and the driver gets it from a Secret through PGPASSWORD.
func checkDatastore(t *testing.T, s signetSystem) {
	t.Helper()
	pod := s.server.Spec.Template.Spec
	ctr := pod.Containers[0]
	hasTmp := slices.ContainsFunc(ctr.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == "/tmp" })
	replicas := int32(1)
	if s.server.Spec.Replicas != nil {
		replicas = *s.server.Spec.Replicas
	}
	if !strings.HasPrefix(s.config.Datastore, "postgres") {
		if replicas != 1 {
			t.Errorf("%d servers on SQLite (%s): SQLite serves one", replicas, s.config.Datastore)
		}
		if !hasTmp {
			t.Errorf("SQLite server has no volume at /tmp for its temporary files (read-only root)")
		}
		return
	}
	if hasTmp || slices.ContainsFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == "tmp" }) {
		t.Errorf("PostgreSQL server still has the SQLite /tmp volume")
	}
	u, err := url.Parse(s.config.Datastore)
	if err != nil {
		t.Fatalf("datastore URL: %v", err)
	}
	if _, set := u.User.Password(); set || u.Query().Has("password") {
		t.Errorf("datastore URL in the ConfigMap holds a password")
	}
	i := slices.IndexFunc(ctr.Env, func(e corev1.EnvVar) bool { return e.Name == "PGPASSWORD" })
	if i < 0 || ctr.Env[i].ValueFrom == nil || ctr.Env[i].ValueFrom.SecretKeyRef == nil {
		t.Fatalf("PostgreSQL server: PGPASSWORD does not come from a Secret (env %v)", ctr.Env)
	}
	if ca := u.Query().Get("sslrootcert"); ca != "" {
		if !mounted(pod, ctr.Name, ca) {
			t.Errorf("datastore sslrootcert %s is on no volume of the server container", ca)
		}
		// The driver reads the CA file as it parses: here a stand-in for
		// the mounted one.
		q := u.Query()
		q.Set("sslrootcert", writeTestFile(t, t.TempDir(), "ca.crt", rootPEM(t, "db.example")))
		u.RawQuery = q.Encode()
	}
	// The driver the store uses takes the password from the environment.
	t.Setenv("PGPASSWORD", "from-the-secret")
	pc, err := pgxpool.ParseConfig(u.String())
	if err != nil {
		t.Fatalf("datastore URL: %v", err)
	}
	if pc.ConnConfig.Password != "from-the-secret" {
		t.Errorf("pgx does not use PGPASSWORD with %s", s.config.Datastore)
	}
}

// mounted reports whether a volume of container can provide the file at
// path: the deepest mount above it is a Secret or ConfigMap volume holding
// that file (a key, or an item's path), or a volume whose content the
// manifests do not show.
func mounted(pod corev1.PodSpec, container, path string) bool {
	var mount *corev1.VolumeMount
	for _, c := range pod.Containers {
		if c.Name != container {
			continue
		}
		for i, m := range c.VolumeMounts {
			if strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/") && (mount == nil || len(m.MountPath) > len(mount.MountPath)) {
				mount = &c.VolumeMounts[i]
			}
		}
	}
	if mount == nil {
		return false
	}
	rel := strings.TrimPrefix(path, strings.TrimSuffix(mount.MountPath, "/")+"/")
	for _, v := range pod.Volumes {
		if v.Name != mount.Name {
			continue
		}
		var items []corev1.KeyToPath
		switch {
		case v.Secret != nil:
			items = v.Secret.Items
		case v.ConfigMap != nil:
			items = v.ConfigMap.Items
		default:
			return true
		}
		if len(items) == 0 {
			return !strings.Contains(rel, "/") // keys hold no slash
		}
		return slices.ContainsFunc(items, func(k corev1.KeyToPath) bool { return k.Path == rel })
	}
	return false
}
