package store_test

import (
	"bytes"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/store"
)

func TestVolumes(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		_, teamA := mustUser(t, db, "a@example.com")
		_, teamB := mustUser(t, db, "b@example.com")
		v, err := db.CreateVolume(ctx(t), store.Volume{TeamID: teamA.ID, Name: "data", Host: "h1", Token: "vtok-plain"})
		want(t, err, nil)
		if len(v.ID) != 20 || v.Token != "vtok-plain" || v.Host != "h1" || v.CreatedAt.IsZero() {
			t.Fatalf("created %+v", v)
		}
		var raw []byte
		want(t, store.RawSQL(db).QueryRowContext(ctx(t), store.Q(db, `SELECT token FROM volumes WHERE id = ?`), v.ID).Scan(&raw), nil)
		if bytes.Contains(raw, []byte("vtok-plain")) {
			t.Fatalf("token stored unsealed: %q", raw)
		}
		_, err = db.CreateVolume(ctx(t), store.Volume{TeamID: teamA.ID, Name: "data", Token: "x"})
		want(t, err, store.ErrConflict)
		// Another team may use the same name.
		vb, err := db.CreateVolume(ctx(t), store.Volume{TeamID: teamB.ID, Name: "data", Token: "y"})
		want(t, err, nil)

		for _, key := range []string{v.ID, "data"} {
			got, err := db.GetVolume(ctx(t), teamA.ID, key)
			want(t, err, nil)
			if got != v {
				t.Fatalf("get %s: %+v, want %+v", key, got, v)
			}
		}
		_, err = db.GetVolume(ctx(t), teamB.ID, v.ID)
		want(t, err, store.ErrNotFound)
		got, err := db.GetVolumeByID(ctx(t), vb.ID)
		want(t, err, nil)
		if got.TeamID != teamB.ID {
			t.Fatalf("by id: %+v", got)
		}
		list, err := db.ListVolumes(ctx(t), teamA.ID)
		want(t, err, nil)
		if len(list) != 1 || list[0].ID != v.ID {
			t.Fatalf("list: %+v", list)
		}

		// Mounted by a running sandbox: in use; stopped: deletable.
		sb := mustSandbox(t, db, store.Sandbox{TeamID: teamA.ID, Status: sandbox.StateRunning})
		want(t, db.AddSandboxVolumes(ctx(t), sb.ID, []store.SandboxVolume{{VolumeID: v.ID, Path: "/data"}}), nil)
		mounts, err := db.ListSandboxVolumes(ctx(t), sb.ID)
		want(t, err, nil)
		byTeam, err := db.ListTeamSandboxVolumes(ctx(t), teamA.ID)
		want(t, err, nil)
		if len(byTeam) != 1 || len(byTeam[sb.ID]) != 1 || byTeam[sb.ID][0].Path != "/data" {
			t.Fatalf("team mounts: %+v", byTeam)
		}
		if other, err := db.ListTeamSandboxVolumes(ctx(t), teamB.ID); err != nil || len(other) != 0 {
			t.Fatalf("other team's mounts: %+v %v", other, err)
		}
		if len(mounts) != 1 || mounts[0] != (store.SandboxVolume{VolumeID: v.ID, Name: "data", Path: "/data"}) {
			t.Fatalf("mounts: %+v", mounts)
		}
		if err := db.AddSandboxVolumes(ctx(t), sb.ID, []store.SandboxVolume{{VolumeID: "nope", Path: "/other"}}); err == nil {
			t.Fatal("a mount of an unknown volume was recorded")
		}
		want(t, db.DeleteVolume(ctx(t), teamB.ID, v.ID), store.ErrNotFound)
		want(t, db.DeleteVolume(ctx(t), teamA.ID, v.ID), store.ErrVolumeInUse)
		_, err = db.UpdateSandboxStatus(ctx(t), sb.ID, []sandbox.State{sandbox.StateRunning}, sandbox.StateStopped, "")
		want(t, err, nil)
		want(t, db.DeleteVolume(ctx(t), teamA.ID, v.ID), nil)
		want(t, db.DeleteVolume(ctx(t), teamA.ID, v.ID), store.ErrNotFound)
		if mounts, err = db.ListSandboxVolumes(ctx(t), sb.ID); err != nil || len(mounts) != 0 {
			t.Fatalf("mounts after delete: %+v %v", mounts, err)
		}
	})
}
