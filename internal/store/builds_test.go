package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/store"
)

func TestBuilds(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		_, team := mustUser(t, db, "b@x.io")
		tpl, err := db.CreateTemplate(ctx(t), store.Template{TeamID: team.ID, Name: "web", Kind: sandbox.KindBase, VCPUs: 2, MemoryMB: 512, BuildStatus: store.BuildStatusBuilding})
		if err != nil {
			t.Fatal(err)
		}
		b, err := db.CreateBuild(ctx(t), store.Build{TemplateID: tpl.ID, TeamID: team.ID, Spec: `{}`, VCPUs: 2, MemoryMB: 512, DiskSizeMB: 4096})
		if err != nil {
			t.Fatal(err)
		}
		// One active build per template.
		_, err = db.CreateBuild(ctx(t), store.Build{TemplateID: tpl.ID, TeamID: team.ID, Spec: `{}`, VCPUs: 2, MemoryMB: 512, DiskSizeMB: 4096})
		want(t, err, store.ErrConflict)

		if _, err := db.UpdateBuildStatus(ctx(t), b.ID, []string{store.BuildStatusWaiting}, store.BuildStatusBuilding, "h1", ""); err != nil {
			t.Fatal(err)
		}
		_, err = db.UpdateBuildStatus(ctx(t), b.ID, []string{store.BuildStatusWaiting}, store.BuildStatusBuilding, "", "")
		want(t, err, store.ErrStaleState)

		n, err := db.AppendBuildLogs(ctx(t), b.ID, []store.BuildLog{{Time: time.Now(), Level: "info", Step: 1, Message: "one"}, {Time: time.Now(), Level: "info", Step: 1, Message: "two"}})
		if err != nil || n != 2 {
			t.Fatalf("append: %d %v", n, err)
		}
		if n, _ := db.AppendBuildLogs(ctx(t), b.ID, []store.BuildLog{{Time: time.Now(), Level: "error", Step: 2, Message: "three"}}); n != 3 {
			t.Fatalf("second append ended at %d", n)
		}
		logs, err := db.ListBuildLogs(ctx(t), b.ID, 1, 10)
		if err != nil || len(logs) != 2 || logs[0].Message != "two" || logs[1].Seq != 3 || logs[1].Step != 2 {
			t.Fatalf("logs after 1: %+v %v", logs, err)
		}

		b.Kind, b.Host = sandbox.KindSnapshot, "h1"
		if err := db.FinishBuild(ctx(t), b, `{"start_cmd":"x"}`); err != nil {
			t.Fatal(err)
		}
		got, err := db.GetTemplateByTeam(ctx(t), team.ID, "web")
		if err != nil {
			t.Fatal(err)
		}
		if got.HostTemplateID() != b.ID || got.Kind != sandbox.KindSnapshot || got.BuildStatus != store.BuildStatusReady || got.Config != `{"start_cmd":"x"}` || got.Host != "h1" {
			t.Errorf("template after its build: %+v", got)
		}
		gb, _ := db.GetBuild(ctx(t), b.ID)
		if gb.Status != store.BuildStatusReady || gb.FinishedAt.IsZero() {
			t.Errorf("build after finish: %+v", gb)
		}
		// The next build may start now.
		b2, err := db.CreateBuild(ctx(t), store.Build{TemplateID: tpl.ID, TeamID: team.ID, Spec: `{}`, VCPUs: 2, MemoryMB: 512, DiskSizeMB: 4096})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.SetTemplateTags(ctx(t), tpl.ID, b.ID, []string{"v1", "stable"}); err != nil {
			t.Fatal(err)
		}
		if err := db.SetTemplateTags(ctx(t), tpl.ID, b2.ID, []string{"stable"}); err != nil {
			t.Fatal(err)
		}
		tags, err := db.ListTemplateTags(ctx(t), tpl.ID)
		if err != nil || len(tags) != 2 || tags[0] != (store.TemplateTag{Tag: "stable", BuildID: b2.ID}) || tags[1] != (store.TemplateTag{Tag: "v1", BuildID: b.ID}) {
			t.Errorf("tags: %+v %v", tags, err)
		}
		if err := db.DeleteTemplateTags(ctx(t), tpl.ID, []string{"v1", "nope"}); err != nil {
			t.Fatal(err)
		}
		list, err := db.ListBuilds(ctx(t), tpl.ID)
		if err != nil || len(list) != 2 || list[0].ID != b2.ID {
			t.Errorf("builds newest first: %+v %v", list, err)
		}
		if act, err := db.ListBuildsByStatus(ctx(t), store.BuildStatusWaiting, store.BuildStatusBuilding); err != nil || len(act) != 1 || act[0].ID != b2.ID {
			t.Errorf("active builds: %+v %v", act, err)
		}
		// Deleting the template takes its builds, logs and tags.
		if err := db.DeleteTemplate(ctx(t), team.ID, tpl.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := db.GetBuild(ctx(t), b.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("build survived its template: %v", err)
		}
	})
}

// Template copies: recorded once per host and version, listed in order,
// gone with their template.
func TestTemplateCopies(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		_, team := mustUser(t, db, "c@x.io")
		tpl, err := db.CreateTemplate(ctx(t), store.Template{TeamID: team.ID, Name: "snap", Kind: sandbox.KindSnapshot, VCPUs: 1, MemoryMB: 256, Host: "h1"})
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range []string{"h2", "h3", "h2"} {
			if err := db.AddTemplateCopy(ctx(t), tpl.ID, "v1", h); err != nil {
				t.Fatalf("add copy on %s: %v", h, err)
			}
		}
		if err := db.AddTemplateCopy(ctx(t), tpl.ID, "v2", "h4"); err != nil {
			t.Fatal(err)
		}
		if got, err := db.TemplateCopyHosts(ctx(t), "v1"); err != nil || len(got) != 2 || got[0] != "h2" || got[1] != "h3" {
			t.Fatalf("copies of v1: %v, %v; want [h2 h3]", got, err)
		}
		if err := db.DeleteTemplate(ctx(t), team.ID, tpl.ID); err != nil {
			t.Fatal(err)
		}
		for _, v := range []string{"v1", "v2"} {
			if got, err := db.TemplateCopyHosts(ctx(t), v); err != nil || len(got) != 0 {
				t.Errorf("copies of %s after the template was deleted: %v, %v", v, got, err)
			}
		}
	})
}
