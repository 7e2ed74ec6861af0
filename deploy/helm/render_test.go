// Package helm_test renders the Helm chart in pgtripwire/ offline, with Helm's own Go
// library, and checks what it makes the way an API server and a platform engineer
// would: every object decoded strictly into the Kubernetes and Prometheus Operator API
// types, names and labels valid, and the parts wired to each other and to pgtripwire
// itself (probes on paths the detector serves, a configuration its loader accepts, the
// repository's alert rules and dashboards). It needs no cluster, no helm binary and no
// network. It is not an install test: admission webhooks, CRD versions and the
// detector's behaviour in a pod are out of its reach.
package helm_test

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	kjson "sigs.k8s.io/json"
	kyaml "sigs.k8s.io/yaml"

	"github.com/pgtripwire/pgtripwire/detector/config"
	"github.com/pgtripwire/pgtripwire/detector/web"
)

const (
	chartDir   = "pgtripwire"
	release    = "pgtripwire"
	namespace  = "security"
	configPath = "/etc/pgtripwire/pgtripwire.yaml"
	// testDSN is the DSN of testdata/minimal.yaml; its password must appear in no
	// object but the Secret.
	testDSN      = "postgres://pgtripwire:s3cret-in-the-dsn@db.example:5432/app?sslmode=verify-full"
	testPassword = "s3cret-in-the-dsn"
)

// object is one rendered Kubernetes object, decoded into its API type.
type object struct {
	source string // the template and document it came from, for messages
	kind   string
	name   string
	obj    any
}

// apiTypes are the kinds the chart may make, each with its API type; rendering any other
// kind fails the test, so a new template comes with its schema.
var apiTypes = map[string]func() any{
	"apps/v1 Deployment":            func() any { return &appsv1.Deployment{} },
	"policy/v1 PodDisruptionBudget": func() any { return &policyv1.PodDisruptionBudget{} },
	"v1 ConfigMap":                  func() any { return &corev1.ConfigMap{} },
	"v1 Secret":                     func() any { return &corev1.Secret{} },
	"v1 Service":                    func() any { return &corev1.Service{} },
	"monitoring.coreos.com/v1 ServiceMonitor": func() any { return &monitoringv1.ServiceMonitor{} },
	"monitoring.coreos.com/v1 PrometheusRule": func() any { return &monitoringv1.PrometheusRule{} },
}

// values reads the value files in testdata/ and merges them in order, as `helm -f a -f b`
// does.
func values(t *testing.T, files ...string) map[string]any {
	t.Helper()
	merged := map[string]any{}
	for _, f := range files {
		v, err := chartutil.ReadValuesFile(filepath.Join("testdata", f))
		if err != nil {
			t.Fatal(err)
		}
		mergeValues(merged, v)
	}
	return merged
}

func mergeValues(dst, src map[string]any) {
	for k, v := range src {
		if s, ok := v.(map[string]any); ok {
			if d, ok := dst[k].(map[string]any); ok {
				mergeValues(d, s)
				continue
			}
		}
		dst[k] = v
	}
}

// render renders the chart as `helm template` would for an install of release into
// namespace, in strict mode (a reference to a value that does not exist is an error, as
// with `helm lint --strict`), and returns the manifests by template, NOTES.txt included.
func render(t *testing.T, vals map[string]any) (map[string]string, error) {
	t.Helper()
	chrt, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load the chart: %v", err)
	}
	if err := chrt.Validate(); err != nil {
		t.Fatalf("Chart.yaml: %v", err)
	}
	top, err := chartutil.ToRenderValues(chrt, vals,
		chartutil.ReleaseOptions{Name: release, Namespace: namespace, Revision: 1, IsInstall: true},
		chartutil.DefaultCapabilities)
	if err != nil {
		return nil, err
	}
	return engine.Engine{Strict: true}.Render(chrt, top)
}

// decode decodes every manifest document the way the API server's strict field
// validation does: unknown and duplicate fields are errors, field names are
// case-sensitive. It reports every problem and returns the objects that decoded.
func decode(t *testing.T, manifests map[string]string) []object {
	t.Helper()
	var objs []object
	for _, tmpl := range slices.Sorted(maps.Keys(manifests)) {
		if strings.HasSuffix(tmpl, "NOTES.txt") {
			continue
		}
		docs := releaseutil.SplitManifests(manifests[tmpl])
		for _, key := range slices.Sorted(maps.Keys(docs)) {
			doc := docs[key]
			src := fmt.Sprintf("%s (%s)", tmpl, key)
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			js, err := kyaml.YAMLToJSONStrict([]byte(doc))
			if err != nil {
				t.Errorf("%s: not YAML: %v\n%s", src, err, doc)
				continue
			}
			var tm metav1.TypeMeta
			if err := json.Unmarshal(js, &tm); err != nil {
				t.Errorf("%s: %v", src, err)
				continue
			}
			newObj, ok := apiTypes[tm.APIVersion+" "+tm.Kind]
			if !ok {
				t.Errorf("%s: %s %s is not among the kinds this test knows the schema of: add its API type to apiTypes", src, tm.APIVersion, tm.Kind)
				continue
			}
			obj := newObj()
			strict, err := kjson.UnmarshalStrict(js, obj)
			if err != nil {
				t.Errorf("%s: %s does not decode: %v", src, tm.Kind, err)
				continue
			}
			for _, e := range strict {
				t.Errorf("%s: %s: %v", src, tm.Kind, e)
			}
			meta := obj.(metav1.Object)
			objs = append(objs, object{source: src, kind: tm.Kind, name: meta.GetName(), obj: obj})
		}
	}
	return objs
}

func stripComments(doc string) string {
	var b strings.Builder
	for line := range strings.Lines(doc) {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// find returns the rendered objects of type T.
func find[T any](objs []object) []T {
	var found []T
	for _, o := range objs {
		if v, ok := o.obj.(T); ok {
			found = append(found, v)
		}
	}
	return found
}

func one[T any](t *testing.T, objs []object, what string) T {
	t.Helper()
	found := find[T](objs)
	if len(found) != 1 {
		t.Fatalf("rendered %d %s, want 1", len(found), what)
	}
	return found[0]
}

// expect is what a case expects of the rendered release.
type expect struct {
	replicas       int32
	ha             bool
	existingSecret string // "" when the chart creates the Secret
	fleet          bool   // config.targets: no PGTRIPWIRE_DSN, no Secret
	monitoring     bool   // ServiceMonitor and PrometheusRule
	dashboards     bool
	sidecarLabel   string // "key=value"; "" for grafana_dashboard=1
}

func TestChartRenders(t *testing.T) {
	tests := []struct {
		name   string
		values []string
		want   expect
	}{
		{"defaults", []string{"minimal.yaml"},
			expect{replicas: 2, ha: true, monitoring: true, dashboards: true}},
		{"existing secret", []string{"minimal.yaml", "existing-secret.yaml"},
			expect{replicas: 2, ha: true, existingSecret: "pgtripwire-dsn", monitoring: true, dashboards: true}},
		{"monitoring off", []string{"minimal.yaml", "monitoring-off.yaml"},
			expect{replicas: 2, ha: true}},
		{"three replicas", []string{"minimal.yaml", "three-replicas.yaml"},
			expect{replicas: 3, ha: true, monitoring: true, dashboards: true}},
		{"one detector without high availability", []string{"minimal.yaml", "single.yaml"},
			expect{replicas: 1, monitoring: true, dashboards: true}},
		{"another sidecar label", []string{"minimal.yaml", "sidecar-label.yaml"},
			expect{replicas: 2, ha: true, monitoring: true, dashboards: true, sidecarLabel: "pgtripwire_dashboard=true"}},
		{"a fleet with a pgpass file", []string{"minimal.yaml", "fleet.yaml"},
			expect{replicas: 2, ha: true, fleet: true, monitoring: true, dashboards: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			manifests, err := render(t, values(t, tt.values...))
			if err != nil {
				t.Fatalf("render: %v", err)
			}
			objs := decode(t, manifests)
			checkObjects(t, objs)
			checkDeployment(t, objs, tt.want)
			checkSecret(t, objs, tt.want)
			checkConfig(t, objs, tt.want)
			checkService(t, objs)
			checkDisruptionBudget(t, objs, tt.want)
			checkMonitoring(t, objs, tt.want)
			checkDashboards(t, objs, tt.want)
			if notes := manifests[chartDir+"/templates/NOTES.txt"]; !strings.Contains(notes, "pgtripwire doctor") {
				t.Errorf("NOTES.txt does not say how to check the prerequisites:\n%s", notes)
			}
		})
	}
}

// checkObjects checks what the API server checks of every object's metadata, and what
// Helm refuses: two objects of one kind and name.
func checkObjects(t *testing.T, objs []object) {
	t.Helper()
	seen := map[string]string{}
	for _, o := range objs {
		meta := o.obj.(metav1.Object)
		id := o.kind + "/" + o.name
		if prev, ok := seen[id]; ok {
			t.Errorf("%s: %s is also made by %s", o.source, id, prev)
		}
		seen[id] = o.source
		nameErrs := validation.IsDNS1123Subdomain(o.name)
		if o.kind == "Service" {
			nameErrs = validation.IsDNS1035Label(o.name)
		}
		for _, e := range nameErrs {
			t.Errorf("%s: name %q: %s", o.source, o.name, e)
		}
		for k, v := range meta.GetLabels() {
			checkLabel(t, o.source, k, v)
		}
		for k := range meta.GetAnnotations() {
			for _, e := range validation.IsQualifiedName(k) {
				t.Errorf("%s: annotation %q: %s", o.source, k, e)
			}
		}
		if meta.GetNamespace() == "" {
			t.Errorf("%s: %s has no namespace: `helm template | kubectl apply` would put it in the current one", o.source, id)
		}
		if cm, ok := o.obj.(*corev1.ConfigMap); ok {
			size := 0
			for k, v := range cm.Data {
				size += len(k) + len(v)
				for _, e := range validation.IsConfigMapKey(k) {
					t.Errorf("%s: key %q: %s", o.source, k, e)
				}
			}
			if size > 1<<20 {
				t.Errorf("%s: %d bytes of data, more than the API server's 1 MiB", o.source, size)
			}
		}
	}
}

func checkLabel(t *testing.T, src, k, v string) {
	t.Helper()
	for _, e := range validation.IsQualifiedName(k) {
		t.Errorf("%s: label %q: %s", src, k, e)
	}
	for _, e := range validation.IsValidLabelValue(v) {
		t.Errorf("%s: label %s=%q: %s", src, k, v, e)
	}
}

func selects(t *testing.T, sel *metav1.LabelSelector, set map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("selector %v: %v", sel, err)
	}
	return !s.Empty() && s.Matches(labels.Set(set))
}

// detectorMux is the detector's own HTTP mux, which serves the probes and /metrics.
func detectorMux() http.Handler {
	return web.Handler(prometheus.NewRegistry(), func() (bool, map[string]string) { return true, nil })
}

// serves says whether the detector answers GET path with 200 when it is ready.
func serves(path string) bool {
	rec := httptest.NewRecorder()
	detectorMux().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code == http.StatusOK
}

func checkDeployment(t *testing.T, objs []object, want expect) {
	t.Helper()
	d := one[*appsv1.Deployment](t, objs, "Deployments")
	pod := d.Spec.Template
	if d.Spec.Replicas == nil || *d.Spec.Replicas != want.replicas {
		t.Errorf("replicas: got %v, want %d", d.Spec.Replicas, want.replicas)
	}
	if !selects(t, d.Spec.Selector, pod.Labels) {
		t.Errorf("the Deployment's selector %v does not select its pods' labels %v: the API server refuses it", d.Spec.Selector, pod.Labels)
	}
	switch {
	case want.ha && (d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType ||
		d.Spec.Strategy.RollingUpdate == nil || d.Spec.Strategy.RollingUpdate.MaxUnavailable == nil ||
		d.Spec.Strategy.RollingUpdate.MaxUnavailable.IntValue() != 0):
		t.Errorf("strategy %+v: want a rolling update that never has fewer detectors than replicas (maxUnavailable 0)", d.Spec.Strategy)
	case !want.ha && d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType:
		t.Errorf("strategy %s without high availability: want Recreate, or old and new detector both page during a rollout", d.Spec.Strategy.Type)
	}

	spec := pod.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(spec.Containers))
	}
	c := spec.Containers[0]
	for _, e := range validation.IsDNS1123Label(c.Name) {
		t.Errorf("container name %q: %s", c.Name, e)
	}
	if got, want := strings.Join(c.Args, " "), "run --config "+configPath; got != want || len(c.Command) != 0 {
		t.Errorf("command %q args %q: want the image's entrypoint with %q", c.Command, c.Args, want)
	}
	if !strings.Contains(c.Image, ":") && !strings.Contains(c.Image, "@") {
		t.Errorf("image %q has no tag or digest", c.Image)
	}

	ports := map[string]int32{}
	for _, p := range c.Ports {
		for _, e := range validation.IsValidPortName(p.Name) {
			t.Errorf("container port name %q: %s", p.Name, e)
		}
		ports[p.Name] = p.ContainerPort
	}
	if listen := listenPort(t, objs); ports["http"] != listen {
		t.Errorf("container port http is %d, the configuration's http.listen port %d", ports["http"], listen)
	}
	for _, probe := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		if probe.probe == nil || probe.probe.HTTPGet == nil {
			t.Errorf("no HTTP %s probe", probe.name)
			continue
		}
		get := probe.probe.HTTPGet
		if get.Path != probe.path || !serves(get.Path) {
			t.Errorf("%s probe on %s (served: %t): want %s, which the detector answers", probe.name, get.Path, serves(get.Path), probe.path)
		}
		if _, ok := ports[get.Port.String()]; !ok && get.Port.IntValue() != int(ports["http"]) {
			t.Errorf("%s probe on port %s: the container has no such port (%v)", probe.name, get.Port.String(), ports)
		}
	}

	// Non-root, nothing writable but the volumes, no privilege to gain.
	psc, sc := spec.SecurityContext, c.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("pod security context %+v: want runAsNonRoot and a non-zero runAsUser", psc)
	}
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("container security context %+v: want a read-only root filesystem, no privilege escalation, every capability dropped", sc)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the pod mounts a service account token: the detector needs no Kubernetes API")
	}
	if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
		t.Errorf("resources %+v: want CPU and memory requests and a memory limit", c.Resources)
	}
	if spec.TerminationGracePeriodSeconds == nil || *spec.TerminationGracePeriodSeconds <= 0 {
		t.Errorf("terminationGracePeriodSeconds %v: want a grace period to close the sessions that hold the locks", spec.TerminationGracePeriodSeconds)
	}

	// The configuration is mounted where --config points, from the ConfigMap rendered.
	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		if _, ok := volumes[m.Name]; !ok {
			t.Errorf("volume mount %s: no such volume", m.Name)
		}
		mounts[m.MountPath] = m
	}
	cfgMount, ok := mounts[filepath.Dir(configPath)]
	if !ok || volumes[cfgMount.Name].ConfigMap == nil {
		t.Fatalf("no ConfigMap mounted at %s (mounts %v)", filepath.Dir(configPath), mounts)
	}
	if cm := configMap(t, objs, volumes[cfgMount.Name].ConfigMap.Name); cm.Data[filepath.Base(configPath)] == "" {
		t.Errorf("ConfigMap %s has no %s", cm.Name, filepath.Base(configPath))
	}
	// Every path the detector writes is on a writable volume: the root is read-only.
	cfg := renderedConfig(t, objs)
	for key, path := range map[string]string{"state_dir": cfg.StateDir, "alerts.file": cfg.Alerts.File} {
		var on *corev1.VolumeMount
		for dir, m := range mounts {
			if strings.HasPrefix(path, dir+"/") && (on == nil || len(dir) > len(on.MountPath)) {
				on = &m
			}
		}
		if on == nil || on.ReadOnly || volumes[on.Name].EmptyDir == nil {
			t.Errorf("%s %s is not on the pod's writable emptyDir (mounts %v): the root filesystem is read-only", key, path, mounts)
		}
	}

	// Replicas spread across nodes: a preferred anti-affinity on the pods' own labels.
	var spread bool
	if a := spec.Affinity; a != nil && a.PodAntiAffinity != nil {
		for _, term := range a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			if term.PodAffinityTerm.TopologyKey == "kubernetes.io/hostname" && selects(t, term.PodAffinityTerm.LabelSelector, pod.Labels) {
				spread = true
			}
		}
	}
	if !spread {
		t.Errorf("affinity %+v: want a preferred pod anti-affinity on kubernetes.io/hostname selecting the detector's pods", spec.Affinity)
	}
}

func configMap(t *testing.T, objs []object, name string) *corev1.ConfigMap {
	t.Helper()
	for _, cm := range find[*corev1.ConfigMap](objs) {
		if cm.Name == name {
			return cm
		}
	}
	t.Fatalf("no ConfigMap %s is rendered", name)
	return nil
}

// dsnEnv returns where the container's PGTRIPWIRE_DSN comes from.
func dsnEnv(t *testing.T, objs []object) *corev1.EnvVar {
	t.Helper()
	d := one[*appsv1.Deployment](t, objs, "Deployments")
	for _, e := range d.Spec.Template.Spec.Containers[0].Env {
		if e.Name == config.EnvDSN {
			return &e
		}
	}
	return nil
}

// getenv returns the environment the detector's configuration loader sees: the DSN
// from the rendered Secret, or a placeholder when the Secret is not the chart's.
func getenv(t *testing.T, objs []object) func(string) string {
	t.Helper()
	env := map[string]string{}
	if e := dsnEnv(t, objs); e != nil && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
		env[config.EnvDSN] = "postgres://pgtripwire@db.example:5432/app" // an existing Secret's
		for _, s := range find[*corev1.Secret](objs) {
			if s.Name == e.ValueFrom.SecretKeyRef.Name {
				env[config.EnvDSN] = string(s.Data[e.ValueFrom.SecretKeyRef.Key])
			}
		}
	}
	return func(k string) string { return env[k] }
}

func checkSecret(t *testing.T, objs []object, want expect) {
	t.Helper()
	e := dsnEnv(t, objs)
	if want.fleet {
		if e != nil || len(find[*corev1.Secret](objs)) != 0 {
			t.Errorf("with targets: %s %+v and %d Secrets rendered, want neither (the loader refuses %s with targets)",
				config.EnvDSN, e, len(find[*corev1.Secret](objs)), config.EnvDSN)
		}
		return
	}
	if e == nil || e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
		t.Fatalf("%s: got %+v, want it from a Secret", config.EnvDSN, e)
	}
	ref := e.ValueFrom.SecretKeyRef
	secrets := find[*corev1.Secret](objs)
	if want.existingSecret != "" {
		if ref.Name != want.existingSecret || len(secrets) != 0 {
			t.Errorf("%s from Secret %s (rendered: %d Secrets): want the existing Secret %s, none rendered", config.EnvDSN, ref.Name, len(secrets), want.existingSecret)
		}
		if ref.Optional != nil && *ref.Optional {
			t.Errorf("%s is optional: a detector without its DSN would connect to libpq's defaults", config.EnvDSN)
		}
		// The other DSNs may be absent from a Secret the chart did not make.
		d := one[*appsv1.Deployment](t, objs, "Deployments")
		for _, e := range d.Spec.Template.Spec.Containers[0].Env {
			if r := e.ValueFrom; e.Name != config.EnvDSN && r != nil && r.SecretKeyRef != nil &&
				(r.SecretKeyRef.Optional == nil || !*r.SecretKeyRef.Optional) {
				t.Errorf("%s from key %s of the existing Secret is required: the pod would not start without it", e.Name, r.SecretKeyRef.Key)
			}
		}
		return
	}
	if len(secrets) != 1 || secrets[0].Name != ref.Name {
		t.Fatalf("%s from Secret %s; rendered %d Secrets: want the chart's", config.EnvDSN, ref.Name, len(secrets))
	}
	if got := string(secrets[0].Data[ref.Key]); got != testDSN {
		t.Errorf("Secret %s key %s: got %q, want secret.dsn", ref.Name, ref.Key, got)
	}
	// The password is in the Secret and nowhere else.
	for _, o := range objs {
		if _, ok := o.obj.(*corev1.Secret); ok {
			continue
		}
		js, err := json.Marshal(o.obj)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(js, []byte(testPassword)) {
			t.Errorf("%s: the DSN's password is in a %s, readable by whoever may read those", o.source, o.kind)
		}
	}
}

// renderedConfig loads the rendered configuration file with pgtripwire's own loader.
func renderedConfig(t *testing.T, objs []object) *config.Config {
	t.Helper()
	data := configFile(t, objs)
	cfg, err := config.Parse(configPath, []byte(data), getenv(t, objs))
	if err != nil {
		t.Fatalf("pgtripwire's loader refuses the rendered configuration:\n%v\n%s", err, data)
	}
	return cfg
}

func configFile(t *testing.T, objs []object) string {
	t.Helper()
	d := one[*appsv1.Deployment](t, objs, "Deployments")
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.ConfigMap != nil && v.Name == "config" {
			return configMap(t, objs, v.ConfigMap.Name).Data[filepath.Base(configPath)]
		}
	}
	t.Fatal("the Deployment mounts no config ConfigMap")
	return ""
}

func listenPort(t *testing.T, objs []object) int32 {
	t.Helper()
	var raw struct {
		HTTP struct {
			Listen string `yaml:"listen"`
		} `yaml:"http"`
	}
	if err := yaml.Unmarshal([]byte(configFile(t, objs)), &raw); err != nil {
		t.Fatal(err)
	}
	var port int32
	if _, err := fmt.Sscanf(raw.HTTP.Listen[strings.LastIndex(raw.HTTP.Listen, ":")+1:], "%d", &port); err != nil {
		t.Fatalf("http.listen %q: %v", raw.HTTP.Listen, err)
	}
	return port
}

func checkConfig(t *testing.T, objs []object, want expect) {
	t.Helper()
	cfg := renderedConfig(t, objs)
	if len(cfg.Sensitive) == 0 && len(cfg.Targets) == 0 {
		t.Error("the rendered configuration watches no sensitive table")
	}
	if cfg.HighAvailability.Enabled != want.ha {
		t.Errorf("high_availability.enabled: got %t, want %t", cfg.HighAvailability.Enabled, want.ha)
	}
	var raw struct {
		Database map[string]any `yaml:"database"`
	}
	if err := yaml.Unmarshal([]byte(configFile(t, objs)), &raw); err != nil {
		t.Fatal(err)
	}
	if _, ok := raw.Database["dsn"]; ok {
		t.Error("database.dsn is in the ConfigMap: the DSN belongs in the Secret")
	}
}

func checkService(t *testing.T, objs []object) {
	t.Helper()
	svc := one[*corev1.Service](t, objs, "Services")
	d := one[*appsv1.Deployment](t, objs, "Deployments")
	if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("the Service's selector %v does not select the detector's pods %v", svc.Spec.Selector, d.Spec.Template.Labels)
	}
	container := d.Spec.Template.Spec.Containers[0]
	var metrics bool
	for _, p := range svc.Spec.Ports {
		for _, e := range validation.IsValidPortName(p.Name) {
			t.Errorf("Service port name %q: %s", p.Name, e)
		}
		for _, cp := range container.Ports {
			if cp.Name == "http" && (p.TargetPort.String() == cp.Name || p.TargetPort.IntValue() == int(cp.ContainerPort)) {
				metrics = true
			}
		}
	}
	if !metrics || !serves("/metrics") {
		t.Errorf("no port of the Service %v reaches the container's http port %v", svc.Spec.Ports, container.Ports)
	}
}

func checkDisruptionBudget(t *testing.T, objs []object, want expect) {
	t.Helper()
	pdbs := find[*policyv1.PodDisruptionBudget](objs)
	if want.replicas == 1 {
		if len(pdbs) != 0 {
			t.Error("a PodDisruptionBudget for a single detector blocks every node drain")
		}
		return
	}
	if len(pdbs) != 1 {
		t.Fatalf("rendered %d PodDisruptionBudgets, want 1", len(pdbs))
	}
	pdb := pdbs[0]
	d := one[*appsv1.Deployment](t, objs, "Deployments")
	if !selects(t, pdb.Spec.Selector, d.Spec.Template.Labels) {
		t.Errorf("the PodDisruptionBudget's selector %v does not select the detector's pods %v", pdb.Spec.Selector, d.Spec.Template.Labels)
	}
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 || pdb.Spec.MaxUnavailable != nil {
		t.Errorf("minAvailable %v, maxUnavailable %v: want minAvailable 1", pdb.Spec.MinAvailable, pdb.Spec.MaxUnavailable)
	}
}

// rulesJob is the scrape job the detector-health rules select.
func rulesJob(t *testing.T) string {
	t.Helper()
	rules, err := os.ReadFile(alertRules)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`job="([^"]+)"`).FindAllSubmatch(rules, -1)
	if len(m) == 0 {
		t.Fatalf("%s: no rule selects a job", alertRules)
	}
	return string(m[0][1])
}

func checkMonitoring(t *testing.T, objs []object, want expect) {
	t.Helper()
	monitors := find[*monitoringv1.ServiceMonitor](objs)
	rules := find[*monitoringv1.PrometheusRule](objs)
	if !want.monitoring {
		if len(monitors)+len(rules) != 0 {
			t.Errorf("rendered %d ServiceMonitors and %d PrometheusRules with monitoring off", len(monitors), len(rules))
		}
		return
	}
	if len(monitors) != 1 || len(rules) != 1 {
		t.Fatalf("rendered %d ServiceMonitors and %d PrometheusRules, want 1 each", len(monitors), len(rules))
	}

	sm := monitors[0]
	svc := one[*corev1.Service](t, objs, "Services")
	if !selects(t, &sm.Spec.Selector, svc.Labels) {
		t.Errorf("the ServiceMonitor's selector %v does not select the Service's labels %v", sm.Spec.Selector, svc.Labels)
	}
	if !sm.Spec.NamespaceSelector.Any && !slices.Contains(sm.Spec.NamespaceSelector.MatchNames, svc.Namespace) {
		t.Errorf("the ServiceMonitor's namespaces %v do not include the Service's %s", sm.Spec.NamespaceSelector, svc.Namespace)
	}
	if len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("ServiceMonitor endpoints %+v: want 1", sm.Spec.Endpoints)
	}
	ep := sm.Spec.Endpoints[0]
	if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
		t.Errorf("the ServiceMonitor scrapes port %q; the Service's ports are %v", ep.Port, svc.Spec.Ports)
	}
	if ep.Path != "/metrics" || !serves(ep.Path) {
		t.Errorf("the ServiceMonitor scrapes %q: want /metrics, which the detector serves", ep.Path)
	}
	// The health rules select a job by name; the Operator would name it after the
	// Service unless the ServiceMonitor relabels it.
	job := rulesJob(t)
	var relabelled bool
	for _, r := range ep.RelabelConfigs {
		if r.TargetLabel == "job" && r.Replacement != nil && *r.Replacement == job && len(r.SourceLabels) == 0 {
			relabelled = true
		}
	}
	if !relabelled {
		t.Errorf("the ServiceMonitor does not set job=%q, which the health rules (PgtripwireDown, PgtripwireAbsent) select", job)
	}

	// The PrometheusRule holds the repository's rules, not a stale copy.
	var file struct {
		Groups []monitoringv1.RuleGroup `json:"groups"`
	}
	raw, err := os.ReadFile(alertRules)
	if err != nil {
		t.Fatal(err)
	}
	if err := kyaml.UnmarshalStrict(raw, &file); err != nil {
		t.Fatalf("%s: %v", alertRules, err)
	}
	got, _ := json.MarshalIndent(rules[0].Spec.Groups, "", "  ")
	wantJSON, _ := json.MarshalIndent(file.Groups, "", "  ")
	if len(file.Groups) == 0 || !bytes.Equal(got, wantJSON) {
		t.Errorf("the PrometheusRule's groups differ from %s:\ngot  %s\nwant %s", alertRules, got, wantJSON)
	}
}

func checkDashboards(t *testing.T, objs []object, want expect) {
	t.Helper()
	byFile := map[string]*corev1.ConfigMap{}
	for _, cm := range find[*corev1.ConfigMap](objs) {
		for k := range cm.Data {
			if strings.HasSuffix(k, ".json") {
				byFile[k] = cm
			}
		}
	}
	if !want.dashboards {
		if len(byFile) != 0 {
			t.Errorf("dashboards rendered with dashboards.enabled false: %v", slices.Collect(maps.Keys(byFile)))
		}
		return
	}
	files := repoDashboards(t)
	if len(byFile) != len(files) {
		t.Errorf("rendered dashboards %v, want one ConfigMap per %s (%d)", slices.Sorted(maps.Keys(byFile)), dashboardsGlob, len(files))
	}
	for _, path := range files {
		name := filepath.Base(path)
		cm, ok := byFile[name]
		if !ok {
			t.Errorf("dashboard %s: no ConfigMap holds it", name)
			continue
		}
		key, value, _ := strings.Cut(cmp.Or(want.sidecarLabel, "grafana_dashboard=1"), "=")
		if cm.Labels[key] != value {
			t.Errorf("ConfigMap %s: labels %v, want %s=%q for Grafana's sidecar", cm.Name, cm.Labels, key, value)
		}
		if len(cm.Data) != 1 {
			t.Errorf("ConfigMap %s holds %d files: the sidecar loads every one as a dashboard", cm.Name, len(cm.Data))
		}
		wantJSON, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !jsonEqual(t, []byte(cm.Data[name]), wantJSON) {
			t.Errorf("ConfigMap %s: %s differs from %s", cm.Name, name, path)
		}
	}
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Errorf("not JSON: %v", err)
		return false
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatal(err)
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return bytes.Equal(ja, jb)
}
