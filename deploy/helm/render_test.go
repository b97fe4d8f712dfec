// Package helm_test renders the hearth chart with Helm's own engine for the
// default and the production values and decodes every manifest strictly
// into the Kubernetes API types (unknown or mistyped fields fail), then
// checks what the chart promises: the control plane behind a Service and
// an Ingress for <domain> and *.<domain>, PostgreSQL from a Secret, agents
// as a privileged DaemonSet on labelled nodes.
package helm_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

type manifests struct {
	deployments []appsv1.Deployment
	daemonSets  []appsv1.DaemonSet
	services    []corev1.Service
	ingresses   []networkingv1.Ingress
	pvcs        []corev1.PersistentVolumeClaim
}

func render(t *testing.T, valuesFile string, set map[string]any) (manifests, error) {
	t.Helper()
	ch, err := loader.Load("hearth")
	if err != nil {
		t.Fatal(err)
	}
	vals := chartutil.Values{}
	if valuesFile != "" {
		if vals, err = chartutil.ReadValuesFile(filepath.Join("hearth", valuesFile)); err != nil {
			t.Fatal(err)
		}
	}
	vals = chartutil.CoalesceTables(set, vals)
	rv, err := chartutil.ToRenderValues(ch, vals, chartutil.ReleaseOptions{Name: "hearth", Namespace: "sandboxes", IsInstall: true}, chartutil.DefaultCapabilities)
	if err != nil {
		t.Fatal(err)
	}
	out, err := engine.Render(ch, rv)
	if err != nil {
		return manifests{}, err
	}
	var m manifests
	names := make([]string, 0, len(out))
	for n := range out {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(out[name], -1) {
			if strings.TrimSpace(doc) == "" || strings.HasSuffix(name, ".tpl") {
				continue
			}
			js, err := yaml.YAMLToJSON([]byte(doc))
			if err != nil {
				t.Fatalf("%s #%d: not YAML: %v\n%s", name, i, err, doc)
			}
			if string(js) == "null" {
				continue
			}
			var meta struct{ APIVersion, Kind string }
			if err := json.Unmarshal(js, &meta); err != nil {
				t.Fatal(err)
			}
			where := fmt.Sprintf("%s #%d (%s %s)", name, i, meta.APIVersion, meta.Kind)
			switch meta.APIVersion + " " + meta.Kind {
			case "apps/v1 Deployment":
				m.deployments = append(m.deployments, strict[appsv1.Deployment](t, where, js))
			case "apps/v1 DaemonSet":
				m.daemonSets = append(m.daemonSets, strict[appsv1.DaemonSet](t, where, js))
			case "v1 Service":
				m.services = append(m.services, strict[corev1.Service](t, where, js))
			case "networking.k8s.io/v1 Ingress":
				m.ingresses = append(m.ingresses, strict[networkingv1.Ingress](t, where, js))
			case "v1 PersistentVolumeClaim":
				m.pvcs = append(m.pvcs, strict[corev1.PersistentVolumeClaim](t, where, js))
			default:
				t.Fatalf("%s: a kind this test does not validate", where)
			}
		}
	}
	return m, nil
}

// strict decodes js into T as the API server does, refusing unknown,
// duplicate and wrongly cased fields: the schema check.
func strict[T any](t *testing.T, where string, js []byte) T {
	t.Helper()
	var v T
	strictErrs, err := kjson.UnmarshalStrict(js, &v)
	if err = errors.Join(append(strictErrs, err)...); err != nil {
		t.Fatalf("%s does not match the Kubernetes schema: %v", where, err)
	}
	return v
}

func env(c corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

func subset(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return len(sel) > 0
}

// checkCommon: what every rendering must satisfy.
func checkCommon(t *testing.T, m manifests, domain string) {
	t.Helper()
	if len(m.deployments) != 1 || len(m.services) != 1 || len(m.ingresses) != 1 || len(m.daemonSets) != 1 {
		t.Fatalf("want 1 Deployment, Service, Ingress, DaemonSet; got %d %d %d %d", len(m.deployments), len(m.services), len(m.ingresses), len(m.daemonSets))
	}
	d, svc, ing, ds := m.deployments[0], m.services[0], m.ingresses[0], m.daemonSets[0]
	if !subset(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
		t.Errorf("Deployment selector %v does not select its pods %v", d.Spec.Selector.MatchLabels, d.Spec.Template.Labels)
	}
	if !subset(ds.Spec.Selector.MatchLabels, ds.Spec.Template.Labels) {
		t.Errorf("DaemonSet selector %v does not select its pods", ds.Spec.Selector.MatchLabels)
	}
	if !subset(svc.Spec.Selector, d.Spec.Template.Labels) || subset(svc.Spec.Selector, ds.Spec.Template.Labels) {
		t.Errorf("Service selector %v must pick the control plane and not the agents", svc.Spec.Selector)
	}
	c := d.Spec.Template.Spec.Containers[0]
	if e := env(c, "HEARTH_DOMAIN"); e == nil || e.Value != domain {
		t.Errorf("HEARTH_DOMAIN = %v, want %s", e, domain)
	}
	if env(c, "HEARTH_TRUSTED_PROXY") == nil {
		t.Error("the control plane behind an ingress needs HEARTH_TRUSTED_PROXY")
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/healthz" {
		t.Error("readiness probe is not /healthz")
	}
	port := svc.Spec.Ports[0]
	if port.TargetPort.StrVal != c.Ports[0].Name {
		t.Errorf("Service targets port %q, the container names %q", port.TargetPort.StrVal, c.Ports[0].Name)
	}
	var hosts []string
	for _, r := range ing.Spec.Rules {
		hosts = append(hosts, r.Host)
		b := r.HTTP.Paths[0].Backend.Service
		if b.Name != svc.Name || b.Port.Name != port.Name {
			t.Errorf("Ingress rule %s goes to %s:%s, not the Service %s:%s", r.Host, b.Name, b.Port.Name, svc.Name, port.Name)
		}
	}
	if !slices.Equal(hosts, []string{domain, "*." + domain}) {
		t.Errorf("Ingress hosts %v, want %s and *.%s (api., app. and sandbox hosts)", hosts, domain, domain)
	}
	pod := ds.Spec.Template.Spec
	if pod.NodeSelector["hearth.dev/sandboxes"] != "true" {
		t.Errorf("agents not restricted to labelled nodes: %v", pod.NodeSelector)
	}
	ac := pod.Containers[0]
	if ac.SecurityContext == nil || ac.SecurityContext.Privileged == nil || !*ac.SecurityContext.Privileged {
		t.Error("agent is not privileged (VMs need /dev/kvm, tun, namespaces, mounts)")
	}
	if e := env(ac, "HEARTH_CONTROL_PLANE"); e == nil || e.Value != "https://api."+domain {
		t.Errorf("agent HEARTH_CONTROL_PLANE = %v", e)
	}
}

func TestChartDefaultValues(t *testing.T) {
	m, err := render(t, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	checkCommon(t, m, "hearth.example.com")
	d := m.deployments[0]
	if *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("SQLite: want 1 replica recreated, got %d %s", *d.Spec.Replicas, d.Spec.Strategy.Type)
	}
	if len(m.pvcs) != 1 || d.Spec.Template.Spec.Volumes[0].PersistentVolumeClaim == nil || d.Spec.Template.Spec.Volumes[0].PersistentVolumeClaim.ClaimName != m.pvcs[0].Name {
		t.Error("SQLite data is not on the chart's PersistentVolumeClaim")
	}
	if env(d.Spec.Template.Spec.Containers[0], "HEARTH_DATABASE_URL") != nil {
		t.Error("no database secret given, yet HEARTH_DATABASE_URL is set")
	}
	if len(m.ingresses[0].Spec.TLS) != 0 {
		t.Error("TLS section without a tlsSecret")
	}
}

func TestChartProductionValues(t *testing.T) {
	m, err := render(t, "values-production.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	const domain = "sandbox.example.com"
	checkCommon(t, m, domain)
	d := m.deployments[0]
	if *d.Spec.Replicas != 2 || len(m.pvcs) != 0 {
		t.Errorf("want 2 replicas on PostgreSQL without a volume claim; got %d replicas, %d claims", *d.Spec.Replicas, len(m.pvcs))
	}
	c := d.Spec.Template.Spec.Containers[0]
	for name, secret := range map[string]string{"HEARTH_DATABASE_URL": "hearth-postgres", "HEARTH_JWT_SECRET": "hearth-secrets", "HEARTH_SEAL_KEY": "hearth-secrets"} {
		e := env(c, name)
		if e == nil || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name != secret {
			t.Errorf("%s not from Secret %s: %+v", name, secret, e)
		}
	}
	tls := m.ingresses[0].Spec.TLS
	if len(tls) != 1 || tls[0].SecretName != "sandbox-example-com-wildcard" || !slices.Equal(tls[0].Hosts, []string{domain, "*." + domain}) {
		t.Errorf("Ingress TLS %+v", tls)
	}
	if cn := m.ingresses[0].Spec.IngressClassName; cn == nil || *cn != "nginx" {
		t.Errorf("ingressClassName %v", cn)
	}
	// Each node reads its own token: the Secret's key named after the node.
	ds := m.daemonSets[0].Spec.Template.Spec
	if e := env(ds.Containers[0], "HEARTH_REGISTER_FILE"); e == nil || e.Value != "/etc/hearth/register/$(NODE_NAME)" {
		t.Errorf("HEARTH_REGISTER_FILE = %+v", e)
	}
	mounted := false
	for _, v := range ds.Volumes {
		if v.Secret != nil && v.Secret.SecretName == "hearth-agent-register" {
			for _, vm := range ds.Containers[0].VolumeMounts {
				mounted = mounted || (vm.Name == v.Name && vm.MountPath == "/etc/hearth/register")
			}
		}
	}
	if !mounted {
		t.Error("the registration Secret is not mounted at /etc/hearth/register")
	}
}

func TestChartRefusesReplicasOnSQLite(t *testing.T) {
	_, err := render(t, "", map[string]any{"controlPlane": map[string]any{"replicas": 3}})
	if err == nil || !strings.Contains(err.Error(), "needs database.existingSecret") {
		t.Fatalf("render error = %v, want the replicas/PostgreSQL message", err)
	}
}
