package pki_test

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"io/fs"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/pki"
)

func newCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, err := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "ca"))
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// enrol runs the agent side of registration against ca: key in a fresh
// dir, CSR, SignCSR, SaveIdentity.
func enrol(t *testing.T, ca *pki.CA, hostID string, ttl time.Duration) *pki.Identity {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "agent")
	key, err := pki.LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.CreateCSR(key, "agent-"+hostID)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignCSR(csr, hostID, ttl, "127.0.0.1:7070", "agent.example")
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.SaveIdentity(dir, certPEM, ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func controlPlane(t *testing.T, ca *pki.CA, ttl time.Duration) *tls.Certificate {
	t.Helper()
	c, k, err := ca.IssueControlPlane(ttl, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	kp, err := pki.KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func TestCAFilesAndReload(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := pki.LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]os.FileMode{".": 0o700, pki.CAKeyFile: 0o600, pki.CACertFile: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %v, want %v", name, got, want)
		}
	}
	again, err := pki.LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.Fingerprint() != ca.Fingerprint() {
		t.Fatalf("reload made a new CA: %s != %s", again.Fingerprint(), ca.Fingerprint())
	}
	if !strings.HasPrefix(ca.Fingerprint(), "sha256:") || len(ca.Fingerprint()) != 7+64 {
		t.Fatalf("fingerprint %q", ca.Fingerprint())
	}
}

func TestCARefusesPartialOrExposedKey(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "ca")
	if _, err := pki.LoadOrCreateCA(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, pki.CAKeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.LoadOrCreateCA(dir); err == nil || !strings.Contains(err.Error(), "0600") {
		t.Fatalf("world-readable CA key loaded: %v", err)
	}
	if err := os.Remove(filepath.Join(dir, pki.CACertFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.LoadOrCreateCA(dir); err == nil {
		t.Fatal("a key without its certificate was silently replaced by a new CA")
	}
}

func TestSignCSRIdentity(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	id := enrol(t, ca, "h1", 0)
	leaf := id.Cert.Leaf
	if id.HostID != "h1" {
		t.Fatalf("host id %q", id.HostID)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "hearth://host/h1" {
		t.Fatalf("URIs %v", leaf.URIs)
	}
	if len(leaf.IPAddresses) != 1 || leaf.IPAddresses[0].String() != "127.0.0.1" {
		t.Fatalf("IPs %v", leaf.IPAddresses)
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "agent.example" {
		t.Fatalf("DNS %v", leaf.DNSNames)
	}
	if got := leaf.NotAfter.Sub(time.Now()); got < pki.DefaultCertLifetime-time.Hour || got > pki.DefaultCertLifetime {
		t.Fatalf("lifetime %v", got)
	}
	if _, err := ca.SignCSR([]byte("junk"), "h1", 0); err == nil {
		t.Fatal("signed junk")
	}
	csr, err := pki.CreateCSR(id.Cert.PrivateKey.(crypto.Signer), "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.SignCSR(csr, "a/b", 0); err == nil {
		t.Fatal("signed a host id with a slash")
	}
}

func TestAgentKeyPerms(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "agent")
	k1, err := pki.LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, pki.AgentKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("agent key mode %v", fi.Mode().Perm())
	}
	k2, err := pki.LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !k1.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(k2.Public()) {
		t.Fatal("second LoadOrCreateKey made a new key")
	}
	if _, err := pki.LoadIdentity(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("LoadIdentity before registration: %v, want ErrNotExist", err)
	}
}

func TestSaveIdentityRefusesForeignMaterial(t *testing.T) {
	t.Parallel()
	ca, other := newCA(t), newCA(t)
	dir := filepath.Join(t.TempDir(), "agent")
	key, err := pki.LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := pki.CreateCSR(key, "a")
	good, err := ca.SignCSR(csr, "h1", 0)
	if err != nil {
		t.Fatal(err)
	}
	// A certificate for somebody else's key.
	otherKey, _ := pki.LoadOrCreateKey(filepath.Join(t.TempDir(), "other"))
	otherCSR, _ := pki.CreateCSR(otherKey, "b")
	foreignKeyCert, _ := ca.SignCSR(otherCSR, "h1", 0)
	cases := map[string]struct{ cert, ca []byte }{
		"cert of another CA":  {good, other.CertPEM()},
		"cert for other key":  {foreignKeyCert, ca.CertPEM()},
		"control plane cert":  {mustCP(t, ca), ca.CertPEM()},
		"garbage certificate": {[]byte("x"), ca.CertPEM()},
	}
	for name, c := range cases {
		if _, err := pki.SaveIdentity(dir, c.cert, c.ca); err == nil {
			t.Errorf("%s: saved", name)
		}
	}
	if _, err := pki.SaveIdentity(dir, good, ca.CertPEM()); err != nil {
		t.Fatal(err)
	}
	id, err := pki.LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if id.HostID != "h1" {
		t.Fatalf("loaded host %q", id.HostID)
	}
}

func mustCP(t *testing.T, ca *pki.CA) []byte {
	c, _, err := ca.IssueControlPlane(0)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// agentServer serves "ok" with the agent's mTLS config.
func agentServer(t *testing.T, src pki.CertSource, pool *x509.CertPool) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	// Not StartTLS: it would add httptest's own certificate, which wins
	// over GetCertificate for clients that send no SNI.
	srv.Listener = tls.NewListener(srv.Listener, pki.AgentServerTLS(src, pool))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Start()
	srv.URL = strings.Replace(srv.URL, "http://", "https://", 1)
	t.Cleanup(srv.Close)
	return srv
}

func get(url string, cfg *tls.Config) error {
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 30 * time.Second}
	defer c.CloseIdleConnections()
	res, err := c.Get(url)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if string(b) != "ok" {
		return errors.New("unexpected body " + string(b))
	}
	return nil
}

func TestMutualTLSHandshakes(t *testing.T) {
	t.Parallel()
	ca, other := newCA(t), newCA(t)
	agent := enrol(t, ca, "h1", 0)
	srv := agentServer(t, pki.NewKeeper(agent.Cert), agent.Pool)

	// A second agent server whose certificate comes from another CA but
	// claims the same host ID.
	impostor := enrol(t, other, "h1", 0)
	impSrv := agentServer(t, pki.NewKeeper(impostor.Cert), ca.Pool())

	cp := pki.NewKeeper(controlPlane(t, ca, 0))
	otherCP := pki.NewKeeper(controlPlane(t, other, 0))
	sibling := pki.NewKeeper(enrol(t, ca, "h2", 0).Cert)

	cases := []struct {
		name   string
		url    string
		cfg    *tls.Config
		reason string // substring of the error; "" means success
	}{
		{"control plane to agent", srv.URL, pki.ControlPlaneClientTLS(cp, ca.Pool(), "h1"), ""},
		{"control plane expects another host", srv.URL, pki.ControlPlaneClientTLS(cp, ca.Pool(), "h2"), `want "h2"`},
		{"client cert from another CA", srv.URL, pki.ControlPlaneClientTLS(otherCP, ca.Pool(), "h1"), "tls"},
		{"another agent as client", srv.URL, pki.ControlPlaneClientTLS(sibling, ca.Pool(), "h1"), "tls"},
		{"no client cert", srv.URL, &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"}, "tls"},
		{"agent cert from another CA", impSrv.URL, pki.ControlPlaneClientTLS(cp, ca.Pool(), "h1"), "unknown authority"},
	}
	for _, c := range cases {
		err := get(c.url, c.cfg)
		switch {
		case c.reason == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.reason != "" && err == nil:
			t.Errorf("%s: handshake succeeded", c.name)
		case c.reason != "" && !strings.Contains(err.Error(), c.reason):
			t.Errorf("%s: error %q does not mention %q", c.name, err, c.reason)
		}
	}
}

func TestExpiredAndRotatedCertificates(t *testing.T) {
	t.Parallel()
	ca := newCA(t)
	stale := staleAgent(t, ca, "h1") // expired a day ago
	cp := pki.NewKeeper(controlPlane(t, ca, 0))

	keeper := pki.NewKeeper(stale)
	srv := agentServer(t, keeper, ca.Pool())
	if err := get(srv.URL, pki.ControlPlaneClientTLS(cp, ca.Pool(), "h1")); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired agent certificate accepted or wrong error: %v", err)
	}
	if !pki.NeedsRotation(stale.Leaf, time.Now()) {
		t.Fatal("an expired certificate does not need rotation")
	}

	fresh := enrol(t, ca, "h1", time.Hour)
	rotated, err := keeper.RotateOnce(context.Background(), time.Now(), func(context.Context) (*tls.Certificate, error) {
		return fresh.Cert, nil
	})
	if err != nil || !rotated {
		t.Fatalf("RotateOnce: %v %v", rotated, err)
	}
	// The running server presents the new certificate on the next handshake.
	if err := get(srv.URL, pki.ControlPlaneClientTLS(cp, ca.Pool(), "h1")); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	rotated, err = keeper.RotateOnce(context.Background(), time.Now(), func(context.Context) (*tls.Certificate, error) {
		return nil, errors.New("must not be called")
	})
	if err != nil || rotated {
		t.Fatalf("fresh certificate rotated again: %v %v", rotated, err)
	}

	// An expired control plane certificate is refused by the agent.
	ca.SetClock(time.Now().Add(-48 * time.Hour))
	oldCP := pki.NewKeeper(controlPlane(t, ca, 24*time.Hour))
	if err := get(srv.URL, pki.ControlPlaneClientTLS(oldCP, ca.Pool(), "h1")); err == nil {
		t.Fatal("expired control plane certificate accepted")
	}
}

func TestNeedsRotation(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := &x509.Certificate{NotBefore: start, NotAfter: start.Add(30 * time.Hour)}
	for _, tc := range []struct {
		at   time.Duration
		want bool
	}{
		{-time.Minute, true}, // not yet valid: clocks disagree, renew
		{0, false},
		{19 * time.Hour, false},
		{20*time.Hour - time.Second, false},
		{20 * time.Hour, true},
		{31 * time.Hour, true},
	} {
		if got := pki.NeedsRotation(c, start.Add(tc.at)); got != tc.want {
			t.Errorf("at +%v: %v, want %v", tc.at, got, tc.want)
		}
	}
}

// staleAgent is an agent certificate that expired a day ago (SaveIdentity
// refuses it, so it is assembled by hand).
func staleAgent(t *testing.T, ca *pki.CA, hostID string) *tls.Certificate {
	t.Helper()
	key, err := pki.LoadOrCreateKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := pki.CreateCSR(key, "stale")
	ca.SetClock(time.Now().Add(-48 * time.Hour))
	defer ca.SetClock(time.Now())
	certPEM, err := ca.SignCSR(csr, hostID, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
}
