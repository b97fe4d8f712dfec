package service_test

import (
	"context"
	"errors"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

// The template a fork captures into is deleted (row and host files) with
// the last sandbox made from it, a paused fork keeping it; when every fork
// fails it goes at once, and so do the failed forks. A snapshot taken on
// purpose is never deleted that way.
func TestForkTemplateLifetime(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		ctx := context.Background()
		f := newFixture(t, db)
		src, err := f.svc.CreateSandbox(ctx, f.p, service.CreateSandboxInput{Template: "base"})
		if err != nil {
			t.Fatal(err)
		}
		exists := func(tpl store.Template) bool {
			t.Helper()
			_, err := db.GetTemplateByTeam(ctx, f.p.TeamID, tpl.ID)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				t.Fatal(err)
			}
			if (err == nil) != f.host.HasSnapshot(tpl.ID) {
				t.Fatalf("template %s: row present %v, host files present %v", tpl.ID, err == nil, f.host.HasSnapshot(tpl.ID))
			}
			return err == nil
		}

		tpl, res, err := f.svc.ForkSandbox(ctx, f.p, src.ID, 2, 300)
		if err != nil {
			t.Fatal(err)
		}
		if !tpl.AutoDelete || len(res) != 2 || res[0].Err != nil || res[1].Err != nil {
			t.Fatalf("fork: template auto-delete %v, results %+v", tpl.AutoDelete, res)
		}
		if !exists(tpl) {
			t.Fatal("fork template missing while its forks run")
		}
		if err := f.svc.DestroySandbox(ctx, f.p, res[0].Sandbox.ID); err != nil {
			t.Fatal(err)
		}
		if !exists(tpl) {
			t.Fatal("fork template deleted while a fork still runs")
		}
		if _, _, err := f.svc.PauseSandbox(ctx, f.p, res[1].Sandbox.ID); err != nil {
			t.Fatal(err)
		}
		if err := f.svc.DestroySandbox(ctx, f.p, src.ID); err != nil {
			t.Fatal(err)
		}
		if !exists(tpl) {
			t.Fatal("fork template deleted while a paused fork depends on it")
		}
		if err := f.svc.DestroySandbox(ctx, f.p, res[1].Sandbox.ID); err != nil {
			t.Fatal(err)
		}
		if exists(tpl) {
			t.Fatal("fork template left after its last fork was destroyed")
		}

		// Every fork fails: the failed forks and the template go at once.
		src2, err := f.svc.CreateSandbox(ctx, f.p, service.CreateSandboxInput{Template: "base"})
		if err != nil {
			t.Fatal(err)
		}
		f.host.FailCreates(errors.New("host out of memory"))
		tpl2, res, err := f.svc.ForkSandbox(ctx, f.p, src2.ID, 3, 300)
		f.host.FailCreates(nil)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if r.Err == nil {
				t.Fatalf("fork %d succeeded on a failing host", i)
			}
		}
		if exists(tpl2) {
			t.Fatal("fork template left after every fork failed")
		}
		if n, err := db.CountSandboxesUsingTemplate(ctx, tpl2.ID); err != nil || n != 0 {
			t.Fatalf("failed forks left %d sandbox rows (%v)", n, err)
		}

		// A snapshot made on purpose outlives the sandboxes made from it.
		snap, err := f.svc.CreateSnapshot(ctx, f.p, src2.ID, "keep-me")
		if err != nil {
			t.Fatal(err)
		}
		child, err := f.svc.CreateSandbox(ctx, f.p, service.CreateSandboxInput{Template: snap.ID})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.svc.DestroySandbox(ctx, f.p, child.ID); err != nil {
			t.Fatal(err)
		}
		if snap.AutoDelete || !exists(snap) {
			t.Fatalf("a named snapshot was deleted with its sandbox (auto-delete %v)", snap.AutoDelete)
		}
		if got, err := f.svc.GetSandbox(ctx, f.p, src2.ID); err != nil || got.Status != sandbox.StateRunning {
			t.Fatalf("source after the forks: %v %v", got.Status, err)
		}
	})
}
