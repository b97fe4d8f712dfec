package service_test

import (
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
