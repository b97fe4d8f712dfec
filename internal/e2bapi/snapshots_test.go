package e2bapi_test

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

type snapshotInfo struct {
	SnapshotID string   `json:"snapshotID"`
	Names      []string `json:"names"`
}

func (e *env) snapshot(key, sandboxID string, body any) snapshotInfo {
	e.t.Helper()
	r := e.do(http.MethodPost, "/sandboxes/"+sandboxID+"/snapshots", key, body)
	if r.status != http.StatusCreated {
		e.t.Fatalf("snapshot: %d %s", r.status, r.body)
	}
	var s snapshotInfo
	r.json(e.t, &s)
	return s
}

func TestSnapshots(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, nil)
		c := e.create(e.key, sdkCreate(nil))
		named := e.snapshot(e.key, c.SandboxID, map[string]string{"name": "my-snap"})
		if named.SnapshotID == "" || !slices.Equal(named.Names, []string{"my-snap"}) || !e.host.HasSnapshot(named.SnapshotID) {
			t.Fatalf("named snapshot: %+v", named)
		}
		unnamed := e.snapshot(e.key, c.SandboxID, map[string]any{})
		if len(unnamed.Names) != 1 || !strings.HasPrefix(unnamed.Names[0], "snapshot-") {
			t.Fatalf("unnamed snapshot: %+v", unnamed)
		}
		// Same objects as /v1/snapshots: the source sandbox is untouched.
		if st := e.host.State(c.SandboxID); st != "running" {
			t.Fatalf("source after snapshot: %s", st)
		}

		// Paging by one, filtered by source sandbox.
		var seen []string
		next := ""
		for i := 0; ; i++ {
			if i > 3 {
				t.Fatal("paging does not end")
			}
			r := e.do(http.MethodGet, "/snapshots?limit=1&sandboxID="+c.SandboxID+"&nextToken="+next, e.key, nil)
			var page []snapshotInfo
			r.json(t, &page)
			for _, s := range page {
				seen = append(seen, s.SnapshotID)
			}
			if next = r.header.Get("X-Next-Token"); next == "" {
				break
			}
		}
		slices.Sort(seen)
		want := []string{named.SnapshotID, unnamed.SnapshotID}
		slices.Sort(want)
		if !slices.Equal(seen, want) {
			t.Fatalf("paged snapshots %v, want %v", seen, want)
		}
		var byName []snapshotInfo
		e.do(http.MethodGet, "/snapshots?name=team/my-snap:default", e.key, nil).json(t, &byName)
		if len(byName) != 1 || byName[0].SnapshotID != named.SnapshotID {
			t.Fatalf("by name: %+v", byName)
		}

		// A sandbox runs from the snapshot; while it does, deleting is 409.
		child := e.create(e.key, map[string]any{"templateID": named.SnapshotID, "timeout": 60})
		if child.TemplateID != named.SnapshotID {
			t.Fatalf("child: %+v", child)
		}
		if r := e.do(http.MethodDelete, "/templates/"+named.SnapshotID, e.key, nil); r.status != http.StatusConflict {
			t.Fatalf("delete in use: %d %s", r.status, r.body)
		}
		e.do(http.MethodDelete, "/sandboxes/"+child.SandboxID, e.key, nil)

		// Team B sees none of it.
		var other []snapshotInfo
		e.do(http.MethodGet, "/snapshots", e.keyB, nil).json(t, &other)
		if len(other) != 0 {
			t.Fatalf("team B lists %+v", other)
		}
		for _, tc := range []struct {
			method, path string
			body         any
		}{
			{http.MethodDelete, "/templates/" + named.SnapshotID, nil},
			{http.MethodPost, "/sandboxes/" + c.SandboxID + "/snapshots", map[string]any{}},
			{http.MethodPost, "/sandboxes/" + c.SandboxID + "/fork", map[string]any{"count": 1}},
		} {
			if r := e.do(tc.method, tc.path, e.keyB, tc.body); r.status != http.StatusNotFound {
				t.Errorf("team B %s %s: %d %s", tc.method, tc.path, r.status, r.body)
			}
		}
		// The base template is not a snapshot: not deletable here.
		if r := e.do(http.MethodDelete, "/templates/base", e.key, nil); r.status != http.StatusNotFound {
			t.Fatalf("delete base: %d %s", r.status, r.body)
		}

		if r := e.do(http.MethodDelete, "/templates/"+named.SnapshotID, e.key, nil); r.status != http.StatusNoContent {
			t.Fatalf("delete: %d %s", r.status, r.body)
		}
		if r := e.do(http.MethodDelete, "/templates/"+named.SnapshotID, e.key, nil); r.status != http.StatusNotFound {
			t.Fatalf("delete again: %d %s", r.status, r.body)
		}
		for _, tc := range []struct {
			name string
			body any
			want int
		}{
			{"bad name", map[string]string{"name": "Bad Name!"}, http.StatusBadRequest},
			{"taken name", map[string]string{"name": "my-snap-2"}, http.StatusCreated},
			{"taken again", map[string]string{"name": "my-snap-2"}, http.StatusConflict},
		} {
			if r := e.do(http.MethodPost, "/sandboxes/"+c.SandboxID+"/snapshots", e.key, tc.body); r.status != tc.want {
				t.Errorf("%s: %d %s, want %d", tc.name, r.status, r.body, tc.want)
			}
		}
		if r := e.do(http.MethodGet, "/snapshots?limit=0", e.key, nil); r.status != http.StatusBadRequest {
			t.Errorf("limit=0: %d", r.status)
		}
		if r := e.do(http.MethodGet, "/snapshots?nextToken=nope", e.key, nil); r.status != http.StatusBadRequest {
			t.Errorf("bad nextToken: %d", r.status)
		}
	})
}

type forkResult struct {
	Sandbox *created `json:"sandbox"`
	Error   *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func TestFork(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, nil)
		c := e.create(e.key, sdkCreate(map[string]string{"who": "source"}))
		r := e.do(http.MethodPost, "/sandboxes/"+c.SandboxID+"/fork", e.key, map[string]any{"count": 3, "timeout": 120})
		if r.status != http.StatusCreated {
			t.Fatalf("fork: %d %s", r.status, r.body)
		}
		var res []forkResult
		r.json(t, &res)
		if len(res) != 3 {
			t.Fatalf("fork results: %s", r.body)
		}
		ids := map[string]bool{c.SandboxID: true}
		for _, f := range res {
			if f.Sandbox == nil || f.Error != nil || ids[f.Sandbox.SandboxID] || f.Sandbox.EnvdAccessToken == "" {
				t.Fatalf("fork result: %s", r.body)
			}
			ids[f.Sandbox.SandboxID] = true
			sb, err := db.GetSandboxByID(t.Context(), f.Sandbox.SandboxID)
			if err != nil || sb.TimeoutS != 120 || sb.Metadata["who"] != "source" || sb.TemplateID != res[0].Sandbox.TemplateID {
				t.Fatalf("fork row %+v: %v", sb, err)
			}
		}
		// One capture for three forks; the source runs on.
		var snaps []snapshotInfo
		e.do(http.MethodGet, "/snapshots?sandboxID="+c.SandboxID, e.key, nil).json(t, &snaps)
		if len(snaps) != 1 || snaps[0].SnapshotID != res[0].Sandbox.TemplateID {
			t.Fatalf("captures: %+v", snaps)
		}
		if st := e.host.State(c.SandboxID); st != "running" {
			t.Fatalf("source after fork: %s", st)
		}

		// A fork that fails to start is reported in its entry, not the request.
		e.host.FailCreates(errors.New("host out of memory"))
		r = e.do(http.MethodPost, "/sandboxes/"+c.SandboxID+"/fork", e.key, map[string]any{"count": 2})
		res = nil
		r.json(t, &res)
		if r.status != http.StatusCreated || len(res) != 2 || res[0].Error == nil || res[0].Sandbox != nil || res[0].Error.Code < 500 {
			t.Fatalf("failing forks: %d %s", r.status, r.body)
		}
		e.host.FailCreates(nil)

		for _, tc := range []struct {
			name string
			body map[string]any
		}{
			{"count 0", map[string]any{"count": 0}},
			{"count 101", map[string]any{"count": 101}},
			{"count string", map[string]any{"count": "3"}},
			{"timeout negative", map[string]any{"count": 1, "timeout": -1}},
		} {
			r := e.do(http.MethodPost, "/sandboxes/"+c.SandboxID+"/fork", e.key, tc.body)
			if r.status != http.StatusBadRequest {
				t.Errorf("%s: %d %s", tc.name, r.status, r.body)
			}
		}
		if r := e.do(http.MethodPost, "/sandboxes/nosuch/fork", e.key, map[string]any{"count": 1}); r.status != http.StatusNotFound {
			t.Errorf("unknown: %d %s", r.status, r.body)
		}
		e.do(http.MethodPost, "/sandboxes/"+c.SandboxID+"/pause", e.key, nil)
		if r := e.do(http.MethodPost, "/sandboxes/"+c.SandboxID+"/fork", e.key, map[string]any{"count": 1}); r.status != http.StatusConflict {
			t.Errorf("paused source: %d %s", r.status, r.body)
		}
	})
}
