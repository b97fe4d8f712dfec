package citemplate_test

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/hearth-sandbox/hearth/internal/auth"
	"github.com/hearth-sandbox/hearth/internal/citemplate"
	"github.com/hearth-sandbox/hearth/internal/codeinterp"
	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/service/servicetest"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

// The service and the store are real (SQLite and PostgreSQL); the host is
// servicetest's in-memory one. The bake against real VMs runs in
// tests/e2b (codeinterp.test.mjs).
func newService(t *testing.T, db *store.DB, host *servicetest.FakeHost) *service.Service {
	t.Helper()
	pw, err := auth.NewPasswords(bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	rand.Read(key)
	tokens, err := auth.NewTokens(key, "hearth", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := service.New(service.Deps{Store: db, Hosts: service.SingleHost{ID: host.ID, Client: host},
		Passwords: pw, Tokens: tokens, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func TestEnsure(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		host := servicetest.NewFakeHost("h1")
		svc := newService(t, db, host)
		stateFile := filepath.Join(t.TempDir(), "state.json")
		var readied []string
		opts := func(version string, ready error) citemplate.Options {
			return citemplate.Options{
				Service: svc, Store: db, ImageVersion: version, StateFile: stateFile,
				Ready: func(_ context.Context, id string) error {
					readied = append(readied, id)
					return ready
				},
			}
		}
		current := func() store.Template {
			t.Helper()
			tpl, err := db.GetTemplateByTeam(ctx, store.PlatformTeamID, codeinterp.TemplateName)
			if err != nil {
				t.Fatalf("%s: %v", codeinterp.TemplateName, err)
			}
			return tpl
		}

		// First start: the image is booted, readied, frozen, thrown away.
		if err := citemplate.Ensure(ctx, opts("v1", nil)); err != nil {
			t.Fatal(err)
		}
		first := current()
		if first.Kind != sandbox.KindSnapshot || first.TeamID != store.PlatformTeamID || !host.HasSnapshot(first.ID) {
			t.Fatalf("template %+v (host has it: %v)", first, host.HasSnapshot(first.ID))
		}
		creates := host.Creates()
		if len(creates) != 1 || creates[0].TemplateID != citemplate.ImageTemplate || len(readied) != 1 || readied[0] != creates[0].SandboxID {
			t.Fatalf("creates %+v, readied %v", creates, readied)
		}
		if st := host.State(creates[0].SandboxID); st != "" {
			t.Fatalf("baking sandbox still on the host (%s)", st)
		}
		if _, err := db.GetTemplateByTeam(ctx, store.PlatformTeamID, codeinterp.TemplateName+"-baking"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("staging template left: %v", err)
		}
		if img, err := db.GetTemplateByTeam(ctx, store.PlatformTeamID, citemplate.ImageTemplate); err != nil || img.Kind != sandbox.KindBase {
			t.Fatalf("image template %+v: %v", img, err)
		}

		// Same image: reused, nothing booted.
		if err := citemplate.Ensure(ctx, opts("v1", nil)); err != nil {
			t.Fatal(err)
		}
		if n := len(host.Creates()); n != 1 || current().ID != first.ID {
			t.Fatalf("same image: %d creates, template %s (was %s)", n, current().ID, first.ID)
		}

		// A new image: the old template goes, a new one is baked.
		if err := citemplate.Ensure(ctx, opts("v2", nil)); err != nil {
			t.Fatal(err)
		}
		second := current()
		if second.ID == first.ID || host.HasSnapshot(first.ID) || !host.HasSnapshot(second.ID) || len(host.Creates()) != 2 {
			t.Fatalf("new image: template %s (was %s), old on host %v, creates %d", second.ID, first.ID, host.HasSnapshot(first.ID), len(host.Creates()))
		}

		// A server that never gets ready: an error, no template, no sandbox.
		notReady := errors.New("kernel did not start")
		if err := citemplate.Ensure(ctx, opts("v3", notReady)); !errors.Is(err, notReady) {
			t.Fatalf("err %v, want %v", err, notReady)
		}
		if _, err := db.GetTemplateByTeam(ctx, store.PlatformTeamID, codeinterp.TemplateName); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("template after a failed bake: %v", err)
		}
		last := host.Creates()[len(host.Creates())-1]
		if st := host.State(last.SandboxID); st != "" {
			t.Fatalf("failed bake left its sandbox (%s)", st)
		}
	})
}
