package deploycheck_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/config"
	"github.com/hearth-sandbox/hearth/internal/controlplane"
	"github.com/hearth-sandbox/hearth/internal/doctor/deploycheck"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/sitetls"
	"github.com/hearth-sandbox/hearth/internal/sitetls/sitetlstest"
)

const domain = "hearth.test"

// hosts is DNS for the test domain: a name server for hearth.test cannot
// run here without touching the machine's resolver configuration.
type hosts map[string][]string

func (h hosts) LookupHost(_ context.Context, host string) ([]string, error) {
	if host == "api."+domain || strings.HasSuffix(host, "."+domain) && strings.HasPrefix(host, "49983-") {
		if a, ok := h["*"]; ok {
			return a, nil
		}
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// serveHearth runs a TLS control plane for certDomain's certificate and
// returns its address and an API key of a team.
func serveHearth(t *testing.T, ca *sitetlstest.CA, certDomain string) (addr, apiKey string) {
	t.Helper()
	_, certFile, keyFile, err := ca.WriteSite(t.TempDir(), certDomain)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.DataDir, cfg.Domain, cfg.TLSCert, cfg.TLSKey = t.TempDir(), certDomain, certFile, keyFile
	ctx := context.Background()
	cp, err := controlplane.New(ctx, controlplane.Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	res, err := cp.Service.Signup(ctx, "ops@hearth.test", "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	_, apiKey, err = cp.Service.CreateAPIKey(ctx, service.Principal{UserID: res.User.ID, TeamID: res.Team.ID}, "doctor")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cp.Serve(sctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-done
		cp.Close()
	})
	return ln.Addr().String(), apiKey
}

func byName(checks []deploycheck.Check) map[string]deploycheck.Check {
	m := map[string]deploycheck.Check{}
	for _, c := range checks {
		// Sandbox host names are random: key them by their kind.
		name := c.Name
		if i := strings.Index(name, "49983-doctor"); i >= 0 {
			name = name[:i] + "<sandbox host>"
		}
		m[name] = c
	}
	return m
}

func TestDeploymentChecks(t *testing.T) {
	ca, err := sitetlstest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	good, key := serveHearth(t, ca, domain)
	wrongCert, _ := serveHearth(t, ca, "other.test")
	notHearth := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "default vhost", http.StatusNotFound)
	}))
	_, cf, kf, err := ca.WriteSite(t.TempDir(), domain)
	if err != nil {
		t.Fatal(err)
	}
	notHearth.TLS = siteConfig(t, cf, kf)
	notHearth.StartTLS()
	defer notHearth.Close()

	type want struct {
		ok     bool
		skip   bool
		detail string
	}
	tests := []struct {
		name    string
		connect string
		dns     hosts
		apiKey  string
		now     func() time.Time
		want    map[string]want
	}{
		{
			name: "healthy, no API key", connect: good, dns: hosts{"*": {"127.0.0.1"}},
			want: map[string]want{
				"DNS api.hearth.test":                    {ok: true, detail: "127.0.0.1"},
				"DNS <sandbox host>":                     {ok: true},
				"TLS certificate for api.hearth.test":    {ok: true, detail: "issued by hearth test CA"},
				"TLS certificate for <sandbox host>":     {ok: true},
				"clock skew (server - this machine)":     {ok: true},
				"sandbox traffic https://<sandbox host>": {ok: true, detail: "reaches hearth's sandbox proxy"},
				"control plane → agent → sandbox":        {skip: true, detail: "give --api-key"},
			},
		},
		{
			name: "no DNS, clock an hour behind, no hosts for the probe", connect: good, dns: hosts{}, apiKey: key,
			now: func() time.Time { return time.Now().Add(time.Hour) },
			want: map[string]want{
				"DNS api.hearth.test":                {detail: "no such host"},
				"clock skew (server - this machine)": {detail: "run NTP"},
				"control plane → agent → sandbox":    {detail: "create a tiny sandbox"},
			},
		},
		{
			name: "certificate for another domain", connect: wrongCert, dns: hosts{"*": {"127.0.0.1"}},
			want: map[string]want{
				"TLS certificate for api.hearth.test": {detail: "certificate is valid for other.test, *.other.test, not api.hearth.test"},
			},
		},
		{
			name: "wildcard taken by another server", connect: notHearth.Listener.Addr().String(), dns: hosts{"*": {"127.0.0.1"}},
			want: map[string]want{
				"TLS certificate for <sandbox host>":     {ok: true},
				"sandbox traffic https://<sandbox host>": {detail: "not hearth's sandbox proxy"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, port, _ := net.SplitHostPort(tt.connect)
			checks := deploycheck.Run(context.Background(), deploycheck.Options{
				Domain: domain, Port: port, Connect: tt.connect, RootCAs: ca.Pool(), Resolver: tt.dns, APIKey: tt.apiKey, Now: tt.now,
			})
			var out strings.Builder
			_ = deploycheck.Format(&out, checks)
			t.Logf("report:\n%s", out.String())
			got := byName(checks)
			for name, w := range tt.want {
				c, ok := got[name]
				if !ok {
					t.Errorf("no check %q in %v", name, checks)
					continue
				}
				if c.OK != w.ok || c.Skip != w.skip || !strings.Contains(c.Detail, w.detail) {
					t.Errorf("%s: ok=%v skip=%v %q; want ok=%v skip=%v containing %q", name, c.OK, c.Skip, c.Detail, w.ok, w.skip, w.detail)
				}
			}
			if deploycheck.Failed(checks) == (tt.name == "healthy, no API key") {
				t.Errorf("Failed = %v", deploycheck.Failed(checks))
			}
		})
	}
}

func siteConfig(t *testing.T, certFile, keyFile string) *tls.Config {
	t.Helper()
	r, err := sitetls.Load(sitetls.Options{CertFile: certFile, KeyFile: keyFile, Domain: domain})
	if err != nil {
		t.Fatal(err)
	}
	return r.ServerConfig()
}
