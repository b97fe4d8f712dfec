// Package clitest runs the real /v1 API (internal/api over the real
// service and a real SQLite store) on an httptest server, with the
// in-process fake host at the VM boundary, for tests of the CLI, its
// client and the benchmark logic. It mirrors how internal/api's own tests
// build their server.
package clitest

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/time/rate"

	"github.com/hearth-sandbox/hearth/internal/api"
	"github.com/hearth-sandbox/hearth/internal/auth"
	"github.com/hearth-sandbox/hearth/internal/cli"
	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/service/servicetest"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

// HostID is the fake host's ID.
const HostID = "host-1"

// Server is a control plane on a loopback URL.
type Server struct {
	URL  string
	DB   *store.DB
	Host *servicetest.FakeHost
}

// Account is a signed-up user with an API key.
type Account struct {
	Email, Password, Token, APIKey string
}

// New starts a server with the platform templates "base" (2 vCPU, 512 MiB)
// and "tiny" (1 vCPU, 256 MiB); it stops when tb ends.
func New(tb testing.TB) *Server {
	tb.Helper()
	ctx := context.Background()
	db := storetest.Open(tb, storetest.SQLite)
	pw, err := auth.NewPasswords(bcrypt.MinCost)
	if err != nil {
		tb.Fatal(err)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	tokens, err := auth.NewTokens(key, "hearth", time.Hour, nil)
	if err != nil {
		tb.Fatal(err)
	}
	host := servicetest.NewFakeHost(HostID)
	log := slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelError}))
	svc, err := service.New(service.Deps{Store: db, Hosts: service.SingleHost{ID: HostID, Client: host}, Passwords: pw, Tokens: tokens, Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	for _, t := range []store.Template{
		{Name: "base", Kind: sandbox.KindBase, VCPUs: 2, MemoryMB: 512},
		{Name: "tiny", Kind: sandbox.KindBase, VCPUs: 1, MemoryMB: 256},
	} {
		if _, err := db.UpsertPlatformTemplate(ctx, t); err != nil {
			tb.Fatal(err)
		}
	}
	h := api.New(api.Deps{Service: svc, Logger: log, AuthRate: rate.Inf, AuthBurst: 1, MaxUploadBytes: 64 << 20})
	srv := httptest.NewServer(h)
	tb.Cleanup(srv.Close)
	return &Server{URL: srv.URL, DB: db, Host: host}
}

var accounts atomic.Int64

// Signup creates a fresh user (their own team) and an API key.
func (s *Server) Signup(tb testing.TB) Account {
	tb.Helper()
	ctx := context.Background()
	a := Account{Email: fmt.Sprintf("user%d@example.com", accounts.Add(1)), Password: "password123"}
	c := cli.NewClient(s.URL, "", "")
	tok, err := c.Signup(ctx, a.Email, a.Password)
	if err != nil {
		tb.Fatalf("signup: %v", err)
	}
	c.Token = tok
	k, err := c.CreateAPIKey(ctx, "test")
	if err != nil {
		tb.Fatalf("create API key: %v", err)
	}
	a.Token, a.APIKey = tok, k.Key
	return a
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
