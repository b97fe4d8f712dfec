//go:build vm

package e2e

import (
	"net/http"
	"strings"
	"testing"
)

type template struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Kind     string `json:"kind"`
	VCPUs    int    `json:"vcpus"`
	MemoryMB int    `json:"memory_mb"`
}

// snapshotTemplate freezes sandbox id into a snapshot template named name.
func (a *api) snapshotTemplate(id, name string) template {
	a.t.Helper()
	var tpl template
	if code := a.do("POST", "/v1/snapshots", map[string]any{"sandbox_id": id, "name": name}, &tpl); code != http.StatusCreated {
		a.t.Fatalf("create snapshot of %s: status %d", id, code)
	}
	a.t.Cleanup(func() { a.do("DELETE", "/v1/snapshots/"+name, nil, nil) })
	return tpl
}

// A snapshot template spawns sandboxes from the frozen state (the holder
// process with its in-memory secret, the file) without a boot; each
// diverges on its own; the template's shape is fixed; it cannot be deleted
// while sandboxes use it.
func TestSnapshotTemplate(t *testing.T) {
	a := newAPI(t)
	src := a.create(map[string]any{"template": "base", "memory_mb": 512})
	logConsoleOnFailure(t, src.ID)
	pid := startHolder(a, src.ID)
	frozen := dumpHolder(a, src.ID, pid)
	if r := a.exec(src.ID, "sh", "-c", "echo frozen-file > $HOME/frozen"); r.ExitCode != 0 {
		t.Fatalf("write: %+v", r)
	}
	name := "snap-" + src.ID
	tpl := a.snapshotTemplate(src.ID, name)
	if tpl.Kind != "snapshot" || tpl.VCPUs != src.VCPUs || tpl.MemoryMB != 512 {
		t.Fatalf("template %+v, want kind snapshot with the source's shape (%d vCPUs, 512 MiB)", tpl, src.VCPUs)
	}
	// The source was running: it was paused for the copy and runs again.
	if st := a.status(src.ID); st != "running" {
		t.Fatalf("source status %q after snapshot, want running", st)
	}
	if got := dumpHolder(a, src.ID, pid); got.secret != frozen.secret {
		t.Fatalf("source holder after snapshot: %+v, want secret %s", got, frozen.secret)
	}

	var kids []sandbox
	for i := range 3 {
		kid := a.create(map[string]any{"template": name})
		logConsoleOnFailure(t, kid.ID)
		if kid.Status != "running" || kid.MemoryMB != 512 {
			t.Fatalf("spawn %d: %+v", i, kid)
		}
		got := dumpHolder(a, kid.ID, pid)
		if got.pid != frozen.pid || got.secret != frozen.secret {
			t.Fatalf("spawn %d holder %+v, want the frozen process (pid %d, secret %s)", i, got, frozen.pid, frozen.secret)
		}
		if r := a.exec(kid.ID, "cat", "/home/user/frozen"); r.Stdout != "frozen-file\n" {
			t.Fatalf("spawn %d: frozen file: %+v", i, r)
		}
		kids = append(kids, kid)
	}
	// Each diverges independently: a file written in one is in no other.
	for i, k := range kids {
		if r := a.exec(k.ID, "sh", "-c", "echo "+k.ID+" > $HOME/mine"); r.ExitCode != 0 {
			t.Fatalf("write in spawn %d: %+v", i, r)
		}
	}
	for i, k := range append(kids, src) {
		r := a.exec(k.ID, "sh", "-c", "cat $HOME/mine 2>/dev/null || echo none")
		want := k.ID + "\n"
		if k.ID == src.ID {
			want = "none\n"
		}
		if r.Stdout != want {
			t.Fatalf("sandbox %d (%s) sees %q in $HOME/mine, want %q", i, k.ID, r.Stdout, want)
		}
	}
	// A spawned sandbox is itself pausable and resumes to its own state.
	a.pause(kids[0].ID)
	a.resume(kids[0].ID)
	if r := a.exec(kids[0].ID, "cat", "/home/user/mine"); r.Stdout != kids[0].ID+"\n" {
		t.Fatalf("spawn after pause/resume: %+v", r)
	}
	if got := dumpHolder(a, kids[0].ID, pid); got.secret != frozen.secret {
		t.Fatalf("spawn holder after pause/resume: %+v", got)
	}

	// The shape is baked in.
	var e struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if code := a.do("POST", "/v1/sandboxes", map[string]any{"template": name, "vcpus": src.VCPUs + 1}, &e); code != http.StatusBadRequest || !strings.Contains(e.Message, "vcpus") {
		t.Fatalf("create with other vcpus: %d %+v, want 400 naming vcpus", code, e)
	}
	// In use: refused.
	if code := a.do("DELETE", "/v1/snapshots/"+name, nil, &e); code != http.StatusConflict {
		t.Fatalf("delete template in use: %d %+v, want 409", code, e)
	}
	for _, k := range kids {
		if code := a.do("DELETE", "/v1/sandboxes/"+k.ID, nil, nil); code >= 300 {
			t.Fatalf("destroy %s: %d", k.ID, code)
		}
	}
	if code := a.do("DELETE", "/v1/snapshots/"+name, nil, nil); code != http.StatusNoContent {
		t.Fatalf("delete unused template: %d, want 204", code)
	}
}
