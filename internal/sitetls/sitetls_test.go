package sitetls_test

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/sitetls"
	"github.com/hearth-sandbox/hearth/internal/sitetls/sitetlstest"
)

func write(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadRejectsBadConfiguration(t *testing.T) {
	ca, err := sitetlstest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	good, goodKey, err := ca.Issue([]string{"hearth.test", "*.hearth.test"}, time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, _ := ca.Issue([]string{"hearth.test", "*.hearth.test"}, time.Time{}, time.Time{})
	bare, bareKey, _ := ca.Issue([]string{"hearth.test", "api.hearth.test"}, time.Time{}, time.Time{})
	expired, expiredKey, _ := ca.Issue([]string{"*.hearth.test"}, time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))
	unreadable := write(t, dir, "unreadable.pem", good)
	if err := os.Chmod(unreadable, 0); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		cert, key  string
		domain     string
		wantErr    string // "" = loads
		skipAsRoot bool
	}{
		{name: "good", cert: write(t, dir, "good.pem", good), key: write(t, dir, "good.key", goodKey), domain: "hearth.test"},
		{name: "wildcard missing is named", cert: write(t, dir, "bare.pem", bare), key: write(t, dir, "bare.key", bareKey), domain: "hearth.test",
			wantErr: "does not cover *.hearth.test"},
		{name: "other domain", cert: write(t, dir, "good2.pem", good), key: write(t, dir, "good2.key", goodKey), domain: "example.org",
			wantErr: "does not cover *.example.org (sandbox and API hosts); it names hearth.test, *.hearth.test"},
		{name: "key of another certificate", cert: write(t, dir, "good3.pem", good), key: write(t, dir, "other.key", otherKey), domain: "hearth.test",
			wantErr: "is not the key of the certificate in --tls-cert"},
		{name: "expired", cert: write(t, dir, "exp.pem", expired), key: write(t, dir, "exp.key", expiredKey), domain: "hearth.test",
			wantErr: "certificate expired on"},
		{name: "missing file", cert: filepath.Join(dir, "nope.pem"), key: write(t, dir, "good4.key", goodKey), domain: "hearth.test",
			wantErr: "--tls-cert " + filepath.Join(dir, "nope.pem") + ": stat"},
		{name: "unreadable file", cert: unreadable, key: write(t, dir, "good5.key", goodKey), domain: "hearth.test",
			wantErr: "read --tls-cert " + unreadable + ": open", skipAsRoot: true},
		{name: "not PEM", cert: write(t, dir, "garbage.pem", []byte("hello")), key: write(t, dir, "good6.key", goodKey), domain: "hearth.test",
			wantErr: "--tls-cert " + filepath.Join(dir, "garbage.pem")},
		{name: "no key", cert: write(t, dir, "good7.pem", good), domain: "hearth.test", wantErr: "needs both --tls-cert and --tls-key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.skipAsRoot && os.Geteuid() == 0 {
				t.Skip("root reads mode-0 files")
			}
			r, err := sitetls.Load(sitetls.Options{CertFile: tt.cert, KeyFile: tt.key, Domain: tt.domain})
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if r.Leaf() == nil {
					t.Fatal("no leaf")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Load error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestCheckWarnings(t *testing.T) {
	ca, err := sitetlstest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		names []string
		life  time.Duration
		want  []string
	}{
		{"complete", []string{"d.test", "*.d.test"}, 60 * 24 * time.Hour, nil},
		{"bare domain missing", []string{"*.d.test"}, 60 * 24 * time.Hour, []string{"does not cover d.test itself"}},
		{"expires soon", []string{"d.test", "*.d.test"}, 3 * 24 * time.Hour, []string{"certificate expires in"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certPEM, keyPEM, err := ca.Issue(tt.names, time.Time{}, time.Now().Add(tt.life))
			if err != nil {
				t.Fatal(err)
			}
			c, err := tls.X509KeyPair(certPEM, keyPEM)
			if err != nil {
				t.Fatal(err)
			}
			got, err := sitetls.Check(c.Leaf, "d.test", time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("warnings %q, want %d matching %q", got, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("warning %q, want it to contain %q", got[i], w)
				}
			}
		})
	}
}

// A renewed certificate written over the old files is served on the next
// handshake; a broken rewrite keeps the old one.
func TestReloadOnFileChange(t *testing.T) {
	ca, err := sitetlstest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	_, certFile, keyFile, err := ca.WriteSite(dir, "hearth.test")
	if err != nil {
		t.Fatal(err)
	}
	r, err := sitetls.Load(sitetls.Options{CertFile: certFile, KeyFile: keyFile, Domain: "hearth.test", CheckEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	srv.TLS = r.ServerConfig()
	srv.StartTLS()
	defer srv.Close()
	served := func() string {
		t.Helper()
		conn, err := tls.Dial("tcp", srv.Listener.Addr().String(), &tls.Config{RootCAs: ca.Pool(), ServerName: "api.hearth.test"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	first := served()

	// Renewal, as certbot does it: both files replaced.
	certPEM, keyPEM, err := ca.Issue([]string{"hearth.test", "*.hearth.test"}, time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	write(t, dir, "cert.pem", certPEM)
	write(t, dir, "key.pem", keyPEM)
	// Modification times may not move within the file system's granularity.
	future := time.Now().Add(time.Minute)
	for _, f := range []string{certFile, keyFile} {
		if err := os.Chtimes(f, future, future); err != nil {
			t.Fatal(err)
		}
	}
	second := served()
	if second == first {
		t.Fatal("certificate not reloaded after its files changed")
	}

	// Half a renewal (a new certificate, the old key): keep serving.
	newCert, _, _ := ca.Issue([]string{"hearth.test", "*.hearth.test"}, time.Time{}, time.Time{})
	write(t, dir, "cert.pem", newCert)
	later := future.Add(time.Minute)
	if err := os.Chtimes(certFile, later, later); err != nil {
		t.Fatal(err)
	}
	if got := served(); got != second {
		t.Fatalf("serving %s after a broken rewrite, want the previous %s", got, second)
	}
}

func TestRedirectHandler(t *testing.T) {
	tests := []struct {
		host, port, want string
	}{
		{"hearth.test", "443", "https://hearth.test/a/b?c=d"},
		{"api.hearth.test:80", "8443", "https://api.hearth.test:8443/a/b?c=d"},
		{"[::1]:80", "443", "https://[::1]/a/b?c=d"},
	}
	for _, tt := range tests {
		req := httptest.NewRequest("GET", "http://x/a/b?c=d", nil)
		req.Host = tt.host
		rec := httptest.NewRecorder()
		sitetls.RedirectHandler(tt.port).ServeHTTP(rec, req)
		if rec.Code != http.StatusPermanentRedirect || rec.Header().Get("Location") != tt.want {
			t.Errorf("%s → %d %q, want 308 %q", tt.host, rec.Code, rec.Header().Get("Location"), tt.want)
		}
	}
}
