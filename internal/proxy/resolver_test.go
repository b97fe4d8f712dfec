package proxy_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/hearth-sandbox/hearth/internal/auth"
	"github.com/hearth-sandbox/hearth/internal/hostwire"
	"github.com/hearth-sandbox/hearth/internal/proxy"
	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/service/servicetest"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

// TestStoreResolver resolves sandboxes from a real store and forwards
// through a stand-in agent path proxy (the real agent's is tested in
// internal/agent): state mapping, agent token, auto-resume.
func TestStoreResolver(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		ctx := context.Background()
		pw, err := auth.NewPasswords(bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		tokens, err := auth.NewTokens(bytes.Repeat([]byte("k"), 32), "hearth", time.Hour, nil)
		if err != nil {
			t.Fatal(err)
		}
		host := servicetest.NewFakeHost("h1")
		svc, err := service.New(service.Deps{Store: db, Hosts: service.SingleHost{ID: "h1", Client: host}, Passwords: pw, Tokens: tokens})
		if err != nil {
			t.Fatal(err)
		}
		signup, err := svc.Signup(ctx, "p@example.com", "password123")
		if err != nil {
			t.Fatal(err)
		}
		team := signup.Team
		tpl, err := db.UpsertPlatformTemplate(ctx, store.Template{Name: "base", Kind: sandbox.KindBase, VCPUs: 1, MemoryMB: 256})
		if err != nil {
			t.Fatal(err)
		}
		agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Hearth-Agent-Token") != "agent-secret" {
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			io.WriteString(w, "agent "+r.URL.Path)
		}))
		t.Cleanup(agent.Close)
		if _, err := db.UpsertHost(ctx, store.Host{ID: "h1", Name: "h1", Address: agent.URL, Status: store.HostReady}); err != nil {
			t.Fatal(err)
		}
		// Sandboxes through the service (the fake host runs them), except
		// one stuck creating, written straight to the store.
		mk := func(autoResume, pause bool) store.Sandbox {
			p := service.Principal{UserID: signup.User.ID, TeamID: team.ID}
			sb, err := svc.CreateSandbox(ctx, p, service.CreateSandboxInput{Template: "base", AutoResume: autoResume})
			if err != nil {
				t.Fatal(err)
			}
			if pause {
				if _, _, err := svc.PauseSandbox(ctx, p, sb.ID); err != nil {
					t.Fatal(err)
				}
			}
			return sb
		}
		running := mk(false, false)
		paused := mk(false, true)
		napper := mk(true, true)
		booting, err := db.CreateSandbox(ctx, store.Sandbox{TeamID: team.ID, TemplateID: tpl.ID, Status: sandbox.StateCreating, Host: "h1", VCPUs: 1, MemoryMB: 256})
		if err != nil {
			t.Fatal(err)
		}

		res := &proxy.StoreResolver{Store: db, Route: proxy.AgentRoute("agent-secret"), Resume: proxy.ResumeWith(svc)}
		for _, tc := range []struct {
			name, id string
			want     error
		}{
			{"running", running.ID, nil},
			{"paused", paused.ID, proxy.ErrPaused},
			{"creating", booting.ID, proxy.ErrNotRunning},
			{"missing", "nosuchsandbox", proxy.ErrNotFound},
		} {
			_, err := res.Resolve(ctx, tc.id, 49983)
			if !errors.Is(err, tc.want) {
				t.Fatalf("%s: Resolve err %v, want %v", tc.name, err, tc.want)
			}
		}

		srv := httptest.NewServer(proxy.New(res, proxy.Options{}))
		t.Cleanup(srv.Close)
		get := func(id string) (int, string) {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/health?x=1", nil)
			req.Header.Set(hostwire.HeaderSandboxID, id)
			req.Header.Set(hostwire.HeaderSandboxPort, "49983")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		if code, body := get(running.ID); code != http.StatusOK || body != "agent /sandboxes/"+running.ID+"/proxy/49983/health" {
			t.Fatalf("running: %d %q", code, body)
		}
		if code, _ := get(paused.ID); code != http.StatusConflict {
			t.Fatalf("paused without auto-resume: %d, want 409", code)
		}
		if code, body := get(napper.ID); code != http.StatusOK || !strings.Contains(body, napper.ID) {
			t.Fatalf("auto-resume: %d %q", code, body)
		}
		if host.Resumes() != 1 || host.State(napper.ID) != "running" || host.State(paused.ID) != "paused" {
			t.Fatalf("host: %d resumes, napper %s, paused %s; want 1, running, paused", host.Resumes(), host.State(napper.ID), host.State(paused.ID))
		}
		if sb, err := svc.GetSandboxInternal(ctx, napper.ID); err != nil || sb.Status != sandbox.StateRunning {
			t.Fatalf("auto-resumed sandbox row: %s %v", sb.Status, err)
		}
	})
}
