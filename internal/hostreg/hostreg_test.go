package hostreg_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/hostreg"
	"github.com/hearth-sandbox/hearth/internal/pki"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

type env struct {
	db  *store.DB
	ca  *pki.CA
	reg *hostreg.Server
	url string
	hbs chan store.Host // every accepted heartbeat
}

func newEnv(t *testing.T, db *store.DB) *env {
	t.Helper()
	ca, err := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "ca"))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{db: db, ca: ca, hbs: make(chan store.Host, 100)}
	e.reg = hostreg.NewServer(db, ca, hostreg.Options{OnHeartbeat: func(_ context.Context, h store.Host, _ hostreg.Heartbeat) {
		select {
		case e.hbs <- h:
		default:
		}
	}})
	srv := httptest.NewServer(e.reg.Handler())
	t.Cleanup(srv.Close)
	e.url = srv.URL
	return e
}

func (e *env) token(t *testing.T) string {
	t.Helper()
	tok, exp, err := e.reg.CreateToken(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, hostreg.TokenPrefix) || time.Until(exp) < 23*time.Hour {
		t.Fatalf("token %q expires %v", tok, exp)
	}
	return tok
}

// agent registers a new agent with a fresh data dir.
func (e *env) agent(t *testing.T, name string) (*pki.Identity, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	r := &hostreg.Registrar{DataDir: dir, CAFingerprint: e.ca.Fingerprint()}
	id, err := r.Register(context.Background(), e.url, e.token(t), name, "10.203.0.2:7070", hostreg.Capacity{VCPUs: 8, MemoryMB: 16384, DiskMB: 100000})
	if err != nil {
		t.Fatal(err)
	}
	return id, dir
}

func statusOf(err error) int {
	var se *hostreg.StatusError
	if errors.As(err, &se) {
		return se.Status
	}
	return 0
}

func TestRegistration(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		ctx := context.Background()
		e := newEnv(t, db)
		tok := e.token(t)
		dir := filepath.Join(t.TempDir(), "a1")
		r := &hostreg.Registrar{DataDir: dir, CAFingerprint: e.ca.Fingerprint()}
		id, err := r.Register(ctx, e.url, tok, "a1", "10.203.0.2:7070", hostreg.Capacity{VCPUs: 4, MemoryMB: 8192, DiskMB: 50000})
		if err != nil {
			t.Fatal(err)
		}
		h, err := db.GetHost(ctx, id.HostID)
		if err != nil {
			t.Fatal(err)
		}
		if h.Name != "a1" || h.Address != "10.203.0.2:7070" || h.Status != store.HostReady || h.VCPUs != 4 || h.LastHeartbeat.IsZero() {
			t.Fatalf("host row %+v", h)
		}
		if ip := id.Cert.Leaf.IPAddresses; len(ip) != 1 || ip[0].String() != "10.203.0.2" {
			t.Fatalf("agent cert IP SANs %v", ip)
		}
		loaded, err := pki.LoadIdentity(dir)
		if err != nil || loaded.HostID != id.HostID {
			t.Fatalf("stored identity: %v %v", loaded, err)
		}
		fi, err := os.Stat(filepath.Join(dir, pki.AgentKeyFile))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("agent key: %v %v", fi, err)
		}

		// The token works once, including for a different agent.
		other := &hostreg.Registrar{DataDir: filepath.Join(t.TempDir(), "a2")}
		_, err = other.Register(ctx, e.url, tok, "a2", "10.203.0.3:7070", hostreg.Capacity{})
		if statusOf(err) != http.StatusUnauthorized {
			t.Fatalf("second use of a token: %v, want 401", err)
		}
		// Expired and unknown tokens are refused alike.
		expired := "hrt_expiredtoken"
		if err := db.CreateHostToken(ctx, hostreg.HashToken(expired), time.Now().Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{expired, "hrt_neverissued", ""} {
			_, err = other.Register(ctx, e.url, bad, "a2", "10.203.0.3:7070", hostreg.Capacity{})
			if statusOf(err) != http.StatusUnauthorized {
				t.Errorf("token %q: %v, want 401", bad, err)
			}
		}
		hosts, err := db.ListHosts(ctx)
		if err != nil || len(hosts) != 1 {
			t.Fatalf("hosts after refused registrations: %v %v", hosts, err)
		}
	})
}

func TestRegistrationValidatesBeforeSpendingToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, storetest.Open(t, storetest.SQLite))
	tok := e.token(t)
	for name, body := range map[string]hostreg.RegisterRequest{
		"no csr":      {Token: tok, Name: "a", Address: "10.0.0.1:1"},
		"bad address": {Token: tok, Name: "a", Address: "10.0.0.1", CSRPEM: "x"},
		"no name":     {Token: tok, Address: "10.0.0.1:1"},
	} {
		b, _ := json.Marshal(body)
		res, err := http.Post(e.url+"/v1/hosts/register", "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", name, res.StatusCode)
		}
	}
	r := &hostreg.Registrar{DataDir: t.TempDir()}
	if _, err := r.Register(context.Background(), e.url, tok, "a", "10.0.0.1:1", hostreg.Capacity{}); err != nil {
		t.Fatalf("token spent by invalid requests: %v", err)
	}
}

func TestRegistrationPinnedFingerprint(t *testing.T) {
	t.Parallel()
	e := newEnv(t, storetest.Open(t, storetest.SQLite))
	other, err := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "other"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	r := &hostreg.Registrar{DataDir: dir, CAFingerprint: other.Fingerprint()}
	_, err = r.Register(context.Background(), e.url, e.token(t), "a", "10.0.0.1:1", hostreg.Capacity{})
	if err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("registration with a wrong pin: %v", err)
	}
	if _, err := pki.LoadIdentity(dir); err == nil {
		t.Fatal("identity stored despite a pin mismatch")
	}
}

func TestHeartbeat(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		ctx := context.Background()
		e := newEnv(t, db)
		id, dir := e.agent(t, "a1")
		c := hostreg.NewClient(e.url, nil, pki.NewKeeper(id.Cert), dir)
		before, _ := db.GetHost(ctx, id.HostID)

		// A host marked unreachable becomes ready with its next heartbeat.
		before.Status = store.HostUnreachable
		if _, err := db.UpsertHost(ctx, before); err != nil {
			t.Fatal(err)
		}
		res, err := c.Heartbeat(ctx, hostreg.Heartbeat{
			Capacity:  hostreg.Capacity{VCPUs: 16, MemoryMB: 32768, DiskMB: 200000},
			UsedVCPUs: 3, UsedMemoryMB: 1536, UsedDiskMB: 4096, SandboxCount: 3,
			Sandboxes: []hostreg.SandboxReport{{ID: "s1", State: "running"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		h, _ := db.GetHost(ctx, id.HostID)
		if res.Status != "ready" || h.Status != store.HostReady || h.VCPUs != 16 || h.UsedMemoryMB != 1536 ||
			h.SandboxCount != 3 || !h.LastHeartbeat.After(before.LastHeartbeat) || h.Address != before.Address {
			t.Fatalf("after heartbeat: %+v (answer %+v)", h, res)
		}

		// Draining is the operator's: heartbeats keep it.
		h.Status = store.HostDraining
		if _, err := db.UpsertHost(ctx, h); err != nil {
			t.Fatal(err)
		}
		if res, err = c.Heartbeat(ctx, hostreg.Heartbeat{}); err != nil || res.Status != "draining" {
			t.Fatalf("draining host heartbeat: %+v %v", res, err)
		}
		if h, _ = db.GetHost(ctx, id.HostID); h.Status != store.HostDraining {
			t.Fatalf("heartbeat undid draining: %s", h.Status)
		}

		// A deleted host is told so.
		if err := db.DeleteHost(ctx, id.HostID); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Heartbeat(ctx, hostreg.Heartbeat{}); statusOf(err) != http.StatusNotFound {
			t.Fatalf("heartbeat of a deleted host: %v, want 404", err)
		}
	})
}

// rawHeartbeat posts a heartbeat with hand-made headers.
func rawHeartbeat(t *testing.T, url string, body []byte, hdr http.Header) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	for k, v := range hdr {
		req.Header[k] = v
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// capture records the signed headers and body a Client sends.
type capture struct {
	hdr  http.Header
	body []byte
}

func captured(t *testing.T, id *pki.Identity, dir string) capture {
	t.Helper()
	var c capture
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.hdr = r.Header.Clone()
		c.body, _ = io.ReadAll(r.Body)
		w.Write([]byte(`{"status":"ready"}`))
	}))
	defer srv.Close()
	if _, err := hostreg.NewClient(srv.URL, nil, pki.NewKeeper(id.Cert), dir).Heartbeat(context.Background(), hostreg.Heartbeat{SandboxCount: 1}); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestHeartbeatAuthentication(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, storetest.Open(t, storetest.SQLite))
	a1, dir1 := e.agent(t, "a1")
	a2, _ := e.agent(t, "a2")

	// An agent whose certificate comes from another CA, claiming a1's ID.
	foreignCA, _ := pki.LoadOrCreateCA(filepath.Join(t.TempDir(), "foreign"))
	fdir := t.TempDir()
	fkey, _ := pki.LoadOrCreateKey(fdir)
	fcsr, _ := pki.CreateCSR(fkey, "x")
	fcert, _ := foreignCA.SignCSR(fcsr, a1.HostID, 0)
	fid, err := pki.SaveIdentity(fdir, fcert, foreignCA.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hostreg.NewClient(e.url, nil, pki.NewKeeper(fid.Cert), fdir).Heartbeat(ctx, hostreg.Heartbeat{}); statusOf(err) != http.StatusUnauthorized {
		t.Fatalf("certificate from another CA: %v, want 401", err)
	}

	url1 := e.url + "/v1/hosts/" + a1.HostID + "/heartbeat"
	good := captured(t, a1, dir1)
	if code := rawHeartbeat(t, url1, good.body, good.hdr); code != http.StatusOK {
		t.Fatalf("captured request refused: %d", code)
	}
	if code := rawHeartbeat(t, url1, good.body, good.hdr); code != http.StatusUnauthorized {
		t.Fatalf("replayed request: %d, want 401", code)
	}
	fresh := captured(t, a1, dir1)
	tampered := bytes.Replace(fresh.body, []byte(`"sandbox_count":1`), []byte(`"sandbox_count":9`), 1)
	if code := rawHeartbeat(t, url1, tampered, fresh.hdr); code != http.StatusUnauthorized {
		t.Fatalf("tampered body: %d, want 401", code)
	}
	// a1's signed request replayed against a2's path (the path is signed too,
	// and the certificate names a1).
	if code := rawHeartbeat(t, e.url+"/v1/hosts/"+a2.HostID+"/heartbeat", fresh.body, fresh.hdr); code != http.StatusUnauthorized && code != http.StatusForbidden {
		t.Fatalf("request for another host: %d", code)
	}
	if code := rawHeartbeat(t, url1, nil, nil); code != http.StatusUnauthorized {
		t.Fatalf("unsigned request: %d, want 401", code)
	}
	old := fresh.hdr.Clone()
	old.Set(hostreg.HeaderDate, time.Now().Add(-time.Hour).UTC().Format(time.RFC3339Nano))
	if code := rawHeartbeat(t, url1, fresh.body, old); code != http.StatusUnauthorized {
		t.Fatalf("re-dated request: %d, want 401", code)
	}
}

func TestHeartbeatOverMutualTLS(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.Open(t, storetest.SQLite)
	e := newEnv(t, db)
	a1, _ := e.agent(t, "a1")
	a2, _ := e.agent(t, "a2")

	cpCert, cpKey, err := e.ca.IssueControlPlane(0, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	kp, err := pki.KeyPair(cpCert, cpKey)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(e.reg.Handler())
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{*kp}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: e.ca.Pool()}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	post := func(id *pki.Identity, path string) int {
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: pki.AgentClientTLS(pki.NewKeeper(id.Cert), e.ca.Pool())}}
		defer hc.CloseIdleConnections()
		res, err := hc.Post(srv.URL+path, "application/json", strings.NewReader(`{"vcpus":2}`))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if code := post(a1, "/v1/hosts/"+a1.HostID+"/heartbeat"); code != http.StatusOK {
		t.Fatalf("mTLS heartbeat without signature: %d", code)
	}
	if h, _ := db.GetHost(ctx, a1.HostID); h.VCPUs != 2 {
		t.Fatalf("host row not updated: %+v", h)
	}
	if code := post(a2, "/v1/hosts/"+a1.HostID+"/heartbeat"); code != http.StatusForbidden {
		t.Fatalf("a2's certificate for a1's route: %d, want 403", code)
	}
}

func TestRenew(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, storetest.Open(t, storetest.SQLite))
	id, dir := e.agent(t, "a1")
	keeper := pki.NewKeeper(id.Cert)
	c := hostreg.NewClient(e.url, nil, keeper, dir)
	// Rotation "two years from now": the certificate is due.
	rotated, err := keeper.RotateOnce(ctx, time.Now().Add(2*365*24*time.Hour), c.Renew)
	if err != nil || !rotated {
		t.Fatalf("rotate: %v %v", rotated, err)
	}
	n := keeper.Certificate().Leaf
	if n.SerialNumber.Cmp(id.Cert.Leaf.SerialNumber) == 0 {
		t.Fatal("same certificate after renewal")
	}
	onDisk, err := pki.LoadIdentity(dir)
	if err != nil || onDisk.Cert.Leaf.SerialNumber.Cmp(n.SerialNumber) != 0 || onDisk.HostID != id.HostID {
		t.Fatalf("renewed identity not stored: %v", err)
	}
	// The renewed certificate authenticates heartbeats.
	if _, err := c.Heartbeat(ctx, hostreg.Heartbeat{}); err != nil {
		t.Fatal(err)
	}
}

func TestMonitor(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		ctx := context.Background()
		now := time.Now().UTC().Truncate(time.Second)
		mk := func(name string, st store.HostStatus, age time.Duration) store.Host {
			h, err := db.UpsertHost(ctx, store.Host{Name: name, Address: "x:1", Status: st, LastHeartbeat: now.Add(-age)})
			if err != nil {
				t.Fatal(err)
			}
			return h
		}
		fresh := mk("fresh", store.HostReady, 10*time.Second)
		silent := mk("silent", store.HostReady, 31*time.Second)
		draining := mk("draining", store.HostDraining, time.Hour)
		gone := mk("gone", store.HostUnreachable, time.Hour)
		m := &hostreg.Monitor{Store: db, Window: 30 * time.Second, Now: func() time.Time { return now }}
		marked, err := m.Check(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(marked) != 1 || marked[0].ID != silent.ID {
			t.Fatalf("marked %+v, want only %q", marked, silent.Name)
		}
		want := map[string]store.HostStatus{fresh.ID: store.HostReady, silent.ID: store.HostUnreachable,
			draining.ID: store.HostDraining, gone.ID: store.HostUnreachable}
		for id, st := range want {
			h, _ := db.GetHost(ctx, id)
			if h.Status != st {
				t.Errorf("%s: %s, want %s", h.Name, h.Status, st)
			}
			if id == silent.ID && !h.LastHeartbeat.Equal(silent.LastHeartbeat) {
				t.Errorf("monitor changed last heartbeat: %v -> %v", silent.LastHeartbeat, h.LastHeartbeat)
			}
		}
		if marked, _ := m.Check(ctx); len(marked) != 0 {
			t.Fatalf("second pass marked again: %+v", marked)
		}
	})
}

// TestHeartbeaterSurvivesOutage: heartbeats flow, the control plane refuses
// for a while (agent keeps retrying), then heartbeats flow again, and the
// Monitor's unreachable mark is undone by the next heartbeat.
func TestHeartbeaterSurvivesOutage(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db := storetest.Open(t, storetest.SQLite)
	e := newEnv(t, db)
	id, dir := e.agent(t, "a1")

	var down atomic.Bool
	attempts := make(chan struct{}, 1000)
	gate := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		attempts <- struct{}{}
		if down.Load() {
			http.Error(w, `{"error":"down"}`, http.StatusServiceUnavailable)
			return
		}
		e.reg.Handler().ServeHTTP(w, r)
	}))
	defer gate.Close()

	hb := &hostreg.Heartbeater{
		Sender:   hostreg.NewClient(gate.URL, nil, pki.NewKeeper(id.Cert), dir),
		Report:   func(context.Context) (hostreg.Heartbeat, error) { return hostreg.Heartbeat{SandboxCount: 2}, nil },
		Interval: 5 * time.Millisecond,
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { hb.Run(runCtx); close(done) }()

	waitHB := func() store.Host {
		select {
		case h := <-e.hbs:
			return h
		case <-ctx.Done():
			t.Fatal("no heartbeat arrived")
		}
		return store.Host{}
	}
	waitHB()
	down.Store(true)
	drain(e.hbs)
	for range 3 { // the agent keeps trying while refused
		select {
		case <-attempts:
		case <-ctx.Done():
			t.Fatal("agent stopped retrying")
		}
	}
	m := &hostreg.Monitor{Store: db, Window: time.Nanosecond, Now: func() time.Time { return time.Now().Add(time.Hour) }}
	if marked, err := m.Check(ctx); err != nil || len(marked) != 1 {
		t.Fatalf("monitor: %v %v", marked, err)
	}
	down.Store(false)
	if h := waitHB(); h.Status != store.HostReady || h.SandboxCount != 2 {
		t.Fatalf("after outage: %+v", h)
	}
	stop()
	<-done
}

func drain(c chan store.Host) {
	for {
		select {
		case <-c:
		default:
			return
		}
	}
}
