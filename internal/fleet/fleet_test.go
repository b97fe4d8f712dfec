package fleet_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/fleet"
	"github.com/hearth-sandbox/hearth/internal/hostreg"
	"github.com/hearth-sandbox/hearth/internal/pki"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// agentServer serves h over TLS with the agent side's config, the way
// `hearth agent` does in fleet mode.
func agentServer(t *testing.T, tc *tls.Config, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, TLSConfig: tc}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFleet runs both sides for real over loopback: registration, one-time
// tokens, mTLS both ways, a foreign CA refused, heartbeats, the monitor
// and the proxy transport.
func TestFleet(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db := storetest.Open(t, storetest.SQLite)
	cpDir := t.TempDir()
	cp, err := fleet.NewControlPlane(ctx, fleet.Options{
		DataDir: cpDir, Store: db, Logger: testLogger(t),
		HeartbeatInterval: 50 * time.Millisecond, Window: 300 * time.Millisecond, MonitorInterval: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	go cp.Run(ctx)
	cpSrv := httptest.NewServer(http.StripPrefix("", cp.Handler()))
	defer cpSrv.Close()

	// The CA persists: a second start finds the same one.
	again, err := fleet.NewControlPlane(ctx, fleet.Options{DataDir: cpDir, Store: db})
	if err != nil || again.CAFingerprint() != cp.CAFingerprint() {
		t.Fatalf("CA not reloaded: %v %s != %s", err, again.CAFingerprint(), cp.CAFingerprint())
	}

	token, _, err := cp.CreateToken(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	join := func(dir, token, fingerprint string) (*fleet.AgentSide, error) {
		return fleet.JoinAgent(ctx, fleet.AgentOptions{
			IdentityDir: dir, ControlPlaneURL: cpSrv.URL, RegisterToken: token, CAFingerprint: fingerprint,
			Address: "127.0.0.1:1", HeartbeatInterval: 50 * time.Millisecond, Logger: testLogger(t),
		})
	}
	if _, err := join(t.TempDir(), "", ""); !errors.Is(err, fleet.ErrNotRegistered) {
		t.Fatalf("no identity, no token: %v", err)
	}
	if _, err := join(t.TempDir(), token, "sha256:"+strings.Repeat("0", 64)); err == nil {
		t.Fatal("registration with a wrong CA pin succeeded")
	}
	// The wrong pin was detected after the token was spent: make another.
	if token, _, err = cp.CreateToken(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	agentDir := t.TempDir()
	side, err := join(agentDir, token, cp.CAFingerprint())
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	var se *hostreg.StatusError
	if _, err := join(t.TempDir(), token, cp.CAFingerprint()); !errors.As(err, &se) || se.Status != http.StatusUnauthorized {
		t.Fatalf("second use of a token: %v", err)
	}
	// A restart loads the identity and ignores the (spent) token.
	if s2, err := join(agentDir, token, ""); err != nil || s2.HostID() != side.HostID() {
		t.Fatalf("reload identity: %v", err)
	}

	// Agent RPC listener: only the control plane gets in.
	var seenHeader string
	addr := agentServer(t, side.TLSConfig(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seenHeader = r.Header.Get(fleet.HostHeader)
		io.WriteString(w, "agent "+side.HostID())
	}))
	h, err := db.GetHost(ctx, side.HostID())
	if err != nil {
		t.Fatal(err)
	}
	h.Address = addr
	if _, err := db.UpsertHost(ctx, h); err != nil {
		t.Fatal(err)
	}
	get := func(rt http.RoundTripper, url string) (string, error) {
		resp, err := (&http.Client{Transport: rt, Timeout: 5 * time.Second}).Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	if body, err := get(cp.Transport(side.HostID()), "https://"+addr+"/"); err != nil || body != "agent "+side.HostID() {
		t.Fatalf("control plane → agent: %q %v", body, err)
	}
	if _, err := get(cp.Transport("some-other-host"), "https://"+addr+"/"); err == nil {
		t.Fatal("the agent's certificate was accepted for another host ID")
	}
	// Another agent of the same CA cannot drive this one.
	id, err := pki.LoadIdentity(filepath.Join(agentDir))
	if err != nil {
		t.Fatal(err)
	}
	peer := &http.Transport{TLSClientConfig: pki.AgentClientTLS(pki.NewKeeper(id.Cert), id.Pool)}
	peer.TLSClientConfig.VerifyConnection = nil
	peer.TLSClientConfig.InsecureSkipVerify = true
	if _, err := get(peer, "https://"+addr+"/"); err == nil {
		t.Fatal("an agent certificate was let into an agent")
	}

	// A rogue agent with an identity from another CA, claiming this host ID.
	rogueCA, err := pki.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	rogueDir := t.TempDir()
	rogue := rogueIdentity(t, rogueCA, rogueDir, side.HostID())
	rogueAddr := agentServer(t, pki.AgentServerTLS(pki.NewKeeper(rogue.Cert), rogue.Pool), http.NotFoundHandler())
	if _, err := get(cp.Transport(side.HostID()), "https://"+rogueAddr+"/"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("control plane used an agent of another CA: %v", err)
	}
	rc := hostreg.NewClient(cpSrv.URL, nil, pki.NewKeeper(rogue.Cert), rogueDir)
	if _, err := rc.Heartbeat(ctx, hostreg.Heartbeat{}); !errors.As(err, &se) || se.Status != http.StatusUnauthorized {
		t.Fatalf("rogue heartbeat: %v", err)
	}

	// Heartbeats make the host ready; silence makes it unreachable (the
	// monitor's compare-and-set), the next heartbeat ready again.
	report := func(context.Context) (hostreg.Heartbeat, error) {
		return hostreg.Heartbeat{Capacity: hostreg.Capacity{VCPUs: 4, MemoryMB: 4096, DiskMB: 10000}, SandboxCount: 1}, nil
	}
	status := func() store.HostStatus {
		h, err := db.GetHost(ctx, side.HostID())
		if err != nil {
			t.Fatal(err)
		}
		return h.Status
	}
	actx, stopAgent := context.WithCancel(ctx)
	go side.Run(actx, report)
	waitFor(t, "first heartbeat", func() bool {
		h, _ := db.GetHost(ctx, side.HostID())
		return h.VCPUs == 4 && h.Status == store.HostReady
	})
	stopAgent()
	waitFor(t, "unreachable", func() bool { return status() == store.HostUnreachable })
	if _, err := cp.Pool().Get(ctx, side.HostID()); err == nil {
		t.Fatal("pool hands out an unreachable host")
	}
	actx, stopAgent = context.WithCancel(ctx)
	defer stopAgent()
	go side.Run(actx, report)
	waitFor(t, "ready again", func() bool { return status() == store.HostReady })

	// Sandbox traffic: the proxy transport picks the host's identity from
	// the route's header and does not forward it.
	route, err := cp.ProxyRoute()(ctx, store.Sandbox{ID: "sb1"}, store.Host{ID: side.HostID(), Address: addr}, 8080)
	if err != nil || route.URL.String() != "https://"+addr+"/sandboxes/sb1/proxy/8080" {
		t.Fatalf("route %v %v", route.URL, err)
	}
	req, _ := http.NewRequest("GET", route.URL.String(), nil)
	req.Header = route.Header.Clone()
	resp, err := cp.ProxyTransport().RoundTrip(req)
	if err != nil {
		t.Fatalf("proxy transport: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || seenHeader != "" {
		t.Fatalf("proxy: %d, agent saw host header %q", resp.StatusCode, seenHeader)
	}
	req, _ = http.NewRequest("GET", route.URL.String(), nil)
	if _, err := cp.ProxyTransport().RoundTrip(req); err == nil {
		t.Fatal("proxy transport sent a request naming no host")
	}

	// Deleting the host refuses its heartbeats from then on.
	if err := cp.DeleteHost(ctx, side.HostID()); err != nil {
		t.Fatal(err)
	}
	c := hostreg.NewClient(cpSrv.URL, nil, pki.NewKeeper(id.Cert), agentDir)
	if _, err := c.Heartbeat(ctx, hostreg.Heartbeat{}); !errors.As(err, &se) || se.Status != http.StatusNotFound {
		t.Fatalf("heartbeat of a deleted host: %v", err)
	}
}

func rogueIdentity(t *testing.T, ca *pki.CA, dir, hostID string) *pki.Identity {
	t.Helper()
	key, err := pki.LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.CreateCSR(key, "rogue")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.SignCSR(csr, hostID, 0, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.SaveIdentity(dir, cert, ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	return id
}
