package service_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

// A build reserved and never started (a client gone between the E2B SDK's
// reserve and start calls) blocks its template only until it is stale.
func TestAbandonedBuildIsReplaced(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		_, b1, err := f.svc.NewBuild(t.Context(), f.p, service.NewBuildInput{Name: "web"})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := f.svc.NewBuild(t.Context(), f.p, service.NewBuildInput{Name: "web"}); service.KindOf(err) != service.KindConflict {
			t.Fatalf("second build while the first waits: %v", err)
		}
		f.clk.add(service.AbandonedBuildAfter + time.Minute)
		_, b2, err := f.svc.NewBuild(t.Context(), f.p, service.NewBuildInput{Name: "web"})
		if err != nil {
			t.Fatalf("build after the first was abandoned: %v", err)
		}
		if old, _ := db.GetBuild(t.Context(), b1.ID); old.Status != store.BuildStatusCancelled || b2.ID == b1.ID {
			t.Errorf("abandoned build: %+v", old)
		}
	})
}

// Uploaded build files go BuildFilesTTL after their upload or after the
// E2B SDK's last check that they are there; a partial upload goes too.
func TestReclaimBuildFiles(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		f := newFixture(t, db)
		d := f.deps
		d.BuildFilesDir = t.TempDir()
		svc, err := service.New(d)
		if err != nil {
			t.Fatal(err)
		}
		put := func(body string) string {
			t.Helper()
			h, err := svc.PutBuildFiles(t.Context(), f.p, "", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			return h
		}
		old, checked, fresh := put("old"), put("checked"), ""
		partial := filepath.Join(d.BuildFilesDir, ".upload-123")
		if err := os.WriteFile(partial, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, n := svc.ReclaimOnce(t.Context()); n != 0 {
			t.Fatalf("reclaimed %d fresh files", n)
		}
		f.clk.add(service.BuildFilesTTL + time.Minute)
		if !svc.HasBuildFiles(checked) { // the SDK asks: kept for another TTL
			t.Fatal("uploaded files not found")
		}
		fresh = put("fresh")
		if _, n := svc.ReclaimOnce(t.Context()); n != 2 {
			t.Errorf("reclaimed %d files, want the old upload and the partial one", n)
		}
		for h, want := range map[string]bool{old: false, checked: true, fresh: true} {
			if got := svc.HasBuildFiles(h); got != want {
				t.Errorf("files %s present %v, want %v", h[:8], got, want)
			}
		}
		if _, err := os.Stat(partial); !os.IsNotExist(err) {
			t.Errorf("partial upload: %v", err)
		}
	})
}
