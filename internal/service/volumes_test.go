package service_test

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/service/servicetest"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

func TestVolumes(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		ctx := context.Background()
		f := newFixture(t, db)
		f.host.VolumesDir = t.TempDir()
		other, err := f.svc.Signup(ctx, "other@example.com", "password123")
		if err != nil {
			t.Fatal(err)
		}
		op := service.Principal{UserID: other.User.ID, TeamID: other.Team.ID}

		v, err := f.svc.CreateVolume(ctx, f.p, "data")
		if err != nil || v.Host != "h1" || v.Token == "" {
			t.Fatalf("create: %+v %v", v, err)
		}
		for _, tc := range []struct {
			name string
			err  error
			want service.Kind
		}{
			{"bad name", func() error { _, err := f.svc.CreateVolume(ctx, f.p, "no/slash"); return err }(), service.KindInvalidArgument},
			{"same name", func() error { _, err := f.svc.CreateVolume(ctx, f.p, "data"); return err }(), service.KindConflict},
			{"other team's get", func() error { _, err := f.svc.GetVolume(ctx, op, v.ID); return err }(), service.KindNotFound},
			{"other team's delete", f.svc.DeleteVolume(ctx, op, v.ID), service.KindNotFound},
			{"content, wrong token", func() error {
				_, err := f.svc.VolumeFile(ctx, "nope", service.VolumeFileRequest{VolumeID: v.ID, Op: service.VolumeStat, Path: "/"})
				return err
			}(), service.KindUnauthenticated},
			{"content, unknown volume", func() error {
				_, err := f.svc.VolumeFile(ctx, v.Token, service.VolumeFileRequest{VolumeID: "nope", Op: service.VolumeStat, Path: "/"})
				return err
			}(), service.KindUnauthenticated},
			{"content, missing path", func() error {
				_, err := f.svc.VolumeFile(ctx, v.Token, service.VolumeFileRequest{VolumeID: v.ID, Op: service.VolumeStat, Path: "/nope"})
				return err
			}(), service.KindNotFound},
		} {
			if got := service.KindOf(tc.err); got != tc.want {
				t.Errorf("%s: %v (%s), want %s", tc.name, tc.err, got, tc.want)
			}
		}
		// Another team may use the same name.
		ov, err := f.svc.CreateVolume(ctx, op, "data")
		if err != nil {
			t.Fatal(err)
		}

		// Content API through the host's real volume directory.
		if _, err := f.svc.WriteVolumeFile(ctx, v.ID, v.Token, "/d/hello.txt", strings.NewReader("hi"), service.VolumeAttrs{}); err != nil {
			t.Fatal(err)
		}
		rc, err := f.svc.ReadVolumeFile(ctx, v.ID, v.Token, "/d/hello.txt")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		if string(b) != "hi" {
			t.Fatalf("read %q", b)
		}
		if _, err := f.svc.ReadVolumeFile(ctx, ov.ID, v.Token, "/d/hello.txt"); service.KindOf(err) != service.KindUnauthenticated {
			t.Fatalf("another volume with this token: %v", err)
		}
		es, err := f.svc.VolumeFile(ctx, v.Token, service.VolumeFileRequest{VolumeID: v.ID, Op: service.VolumeList, Path: "/", Depth: 2})
		if err != nil || len(es) != 2 || es[1].Path != "/d/hello.txt" || es[1].Size != 2 {
			t.Fatalf("list: %+v %v", es, err)
		}

		// Mounts: validated, team-scoped, pinned to the volume's host.
		for _, tc := range []struct {
			name   string
			mounts []service.VolumeMountInput
			auto   bool
			want   service.Kind
		}{
			{"relative path", []service.VolumeMountInput{{"data", "data"}}, false, service.KindInvalidArgument},
			{"root", []service.VolumeMountInput{{"data", "/"}}, false, service.KindInvalidArgument},
			{"dotdot", []service.VolumeMountInput{{"data", "/a/../etc"}}, false, service.KindInvalidArgument},
			{"system dir", []service.VolumeMountInput{{"data", "/proc/x"}}, false, service.KindInvalidArgument},
			{"space", []service.VolumeMountInput{{"data", "/a b"}}, false, service.KindInvalidArgument},
			{"twice", []service.VolumeMountInput{{"data", "/a"}, {"data", "/a"}}, false, service.KindInvalidArgument},
			{"unknown volume", []service.VolumeMountInput{{"nope", "/a"}}, false, service.KindNotFound},
			{"other team's volume", []service.VolumeMountInput{{ov.ID, "/a"}}, false, service.KindNotFound},
		} {
			_, err := f.svc.CreateSandbox(ctx, f.p, service.CreateSandboxInput{Template: "base", Volumes: tc.mounts, AutoPause: tc.auto})
			if got := service.KindOf(err); got != tc.want {
				t.Errorf("mount %s: %v (%s), want %s", tc.name, err, got, tc.want)
			}
		}
		// A snapshot template restores a guest that has mounted what it
		// mounts: a request cannot add volumes.
		plain, err := f.svc.CreateSandbox(ctx, f.p, service.CreateSandboxInput{Template: "base"})
		if err != nil {
			t.Fatal(err)
		}
		snap, err := f.svc.CreateSnapshot(ctx, f.p, plain.ID, "plain-snap")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.CreateSandbox(ctx, f.p, service.CreateSandboxInput{Template: snap.ID,
			Volumes: []service.VolumeMountInput{{"data", "/a"}}}); service.KindOf(err) != service.KindInvalidArgument || !strings.Contains(err.Error(), "base template") {
			t.Errorf("mount in a snapshot template's sandbox: %v", err)
		}
		sb, err := f.svc.CreateSandbox(ctx, f.p, service.CreateSandboxInput{Template: "base",
			Volumes: []service.VolumeMountInput{{"data", "/mnt/data"}, {v.ID, "/home/user/again"}}})
		if err != nil {
			t.Fatal(err)
		}
		creates := f.host.Creates()
		got := creates[len(creates)-1].Volumes
		if len(got) != 2 || got[0] != (service.HostVolumeMount{VolumeID: v.ID, Path: "/mnt/data"}) {
			t.Fatalf("host got mounts %+v", got)
		}
		mounts, err := f.svc.SandboxVolumes(ctx, f.p, sb.ID)
		if err != nil || len(mounts) != 2 || mounts[0].Name != "data" {
			t.Fatalf("sandbox volumes: %+v %v", mounts, err)
		}
		// Volumes are served over the network: the sandbox pauses, resumes
		// and is snapshotted like any other.
		if _, _, err := f.svc.PauseSandbox(ctx, f.p, sb.ID); err != nil {
			t.Fatalf("pause with volumes: %v", err)
		}
		if _, err := f.svc.ResumeSandbox(ctx, f.p, sb.ID); err != nil {
			t.Fatalf("resume with volumes: %v", err)
		}
		withVols, err := f.svc.CreateSnapshot(ctx, f.p, sb.ID, "snap")
		if err != nil {
			t.Fatalf("snapshot with volumes: %v", err)
		}
		// Its sandbox inherits the mounts: recorded (listed, and deleting
		// the volume is refused while it runs), not sent to the host (the
		// host has them in the template).
		child, err := f.svc.CreateSandbox(ctx, f.p, service.CreateSandboxInput{Template: withVols.ID})
		if err != nil {
			t.Fatal(err)
		}
		if creates := f.host.Creates(); len(creates[len(creates)-1].Volumes) != 0 {
			t.Fatalf("host got mounts for a snapshot's sandbox: %+v", creates[len(creates)-1].Volumes)
		}
		if cm, err := f.svc.SandboxVolumes(ctx, f.p, child.ID); err != nil || len(cm) != 2 || cm[1].Name != "data" || cm[1].Path != "/mnt/data" {
			t.Fatalf("snapshot child's volumes: %+v %v", cm, err)
		}
		if err := f.svc.DestroySandbox(ctx, f.p, sb.ID); err != nil {
			t.Fatal(err)
		}
		if err := f.svc.DeleteVolume(ctx, f.p, "data"); service.KindOf(err) != service.KindConflict {
			t.Fatalf("delete a volume a snapshot's sandbox mounts: %v", err)
		}
		if err := f.svc.DestroySandbox(ctx, f.p, child.ID); err != nil {
			t.Fatal(err)
		}
		if err := f.svc.DeleteVolume(ctx, f.p, "data"); err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.ReadVolumeFile(ctx, v.ID, v.Token, "/d/hello.txt"); service.KindOf(err) != service.KindUnauthenticated {
			t.Fatalf("read a deleted volume: %v", err)
		}
		vs, err := f.svc.ListVolumes(ctx, f.p)
		if err != nil || len(vs) != 0 {
			t.Fatalf("list after delete: %+v %v", vs, err)
		}
	})
}

func TestVolumePlacementPinned(t *testing.T) {
	p := service.SingleHost{ID: "h1", Client: servicetest.NewFakeHost("h1")}
	if id, _, err := p.Pick(context.Background(), service.PlacementRequest{Host: "h1"}); err != nil || id != "h1" {
		t.Fatalf("pinned to the host: %s %v", id, err)
	}
	if _, _, err := p.Pick(context.Background(), service.PlacementRequest{Host: "h2"}); service.KindOf(err) != service.KindUnavailable {
		t.Fatalf("pinned to another host: %v", err)
	}
}
