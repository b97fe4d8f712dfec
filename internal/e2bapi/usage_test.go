package e2bapi_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

func TestRefresh(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, nil)
		c := e.create(e.key, sdkCreate(nil))
		before := time.Now()
		if r := e.do(http.MethodPost, "/sandboxes/"+c.SandboxID+"/refreshes", e.key, map[string]int{"duration": 1800}); r.status != http.StatusNoContent {
			t.Fatalf("refresh: %d %s", r.status, r.body)
		}
		sb, err := db.GetSandboxByID(t.Context(), c.SandboxID)
		if err != nil {
			t.Fatal(err)
		}
		if sb.EndAt.Before(before.Add(1799*time.Second)) || sb.EndAt.After(time.Now().Add(1801*time.Second)) {
			t.Fatalf("end after refresh: %v", sb.EndAt)
		}
		for _, tc := range []struct {
			name, key, id string
			body          any
			want          int
		}{
			{"too long", e.key, c.SandboxID, map[string]int{"duration": 3601}, http.StatusBadRequest},
			{"negative", e.key, c.SandboxID, map[string]int{"duration": -1}, http.StatusBadRequest},
			{"other team", e.keyB, c.SandboxID, map[string]int{"duration": 60}, http.StatusNotFound},
			{"unknown", e.key, "nosuch", map[string]int{"duration": 60}, http.StatusNotFound},
		} {
			if r := e.do(http.MethodPost, "/sandboxes/"+tc.id+"/refreshes", tc.key, tc.body); r.status != tc.want {
				t.Errorf("%s: %d %s, want %d", tc.name, r.status, r.body, tc.want)
			}
		}
	})
}

func TestTeamsAndTeamMetrics(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, nil)
		var teams []struct {
			TeamID    string `json:"teamID"`
			Name      string `json:"name"`
			APIKey    string `json:"apiKey"`
			IsDefault bool   `json:"isDefault"`
		}
		e.do(http.MethodGet, "/teams", e.key, nil).json(t, &teams)
		if len(teams) != 1 || teams[0].TeamID == "" || teams[0].APIKey != e.key || !teams[0].IsDefault {
			t.Fatalf("teams: %+v", teams)
		}
		team := teams[0].TeamID
		e.create(e.key, sdkCreate(nil))
		e.create(e.key, sdkCreate(nil))
		e.create(e.keyB, sdkCreate(nil)) // not counted for team A

		var ms []struct {
			TimestampUnix       int64   `json:"timestampUnix"`
			ConcurrentSandboxes int     `json:"concurrentSandboxes"`
			SandboxStartRate    float64 `json:"sandboxStartRate"`
		}
		r := e.do(http.MethodGet, "/teams/"+team+"/metrics?start=1&end=2000000000", e.key, nil)
		r.json(t, &ms)
		if r.status != http.StatusOK || len(ms) != 1 || ms[0].ConcurrentSandboxes != 2 || ms[0].SandboxStartRate != 2.0/60 {
			t.Fatalf("team metrics: %d %s", r.status, r.body)
		}
		var max struct {
			Value float64 `json:"value"`
		}
		e.do(http.MethodGet, "/teams/"+team+"/metrics/max?metric=concurrent_sandboxes", e.key, nil).json(t, &max)
		if max.Value != 2 {
			t.Fatalf("max concurrent: %v", max.Value)
		}
		for _, tc := range []struct {
			name, path, key string
			want            int
		}{
			{"other team's metrics", "/teams/" + team + "/metrics", e.keyB, http.StatusNotFound},
			{"other team's max", "/teams/" + team + "/metrics/max?metric=concurrent_sandboxes", e.keyB, http.StatusNotFound},
			{"unknown metric", "/teams/" + team + "/metrics/max?metric=cpu", e.key, http.StatusBadRequest},
			{"bad start", "/teams/" + team + "/metrics?start=yesterday", e.key, http.StatusBadRequest},
			{"end before start", "/teams/" + team + "/metrics?start=20&end=10", e.key, http.StatusBadRequest},
		} {
			if r := e.do(http.MethodGet, tc.path, tc.key, nil); r.status != tc.want {
				t.Errorf("%s: %d %s, want %d", tc.name, r.status, r.body, tc.want)
			}
		}
	})
}

func TestManySandboxMetrics(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, nil)
		c := e.create(e.key, sdkCreate(nil))
		paused := e.create(e.key, sdkCreate(nil))
		e.do(http.MethodPost, "/sandboxes/"+paused.SandboxID+"/pause", e.key, nil)
		resp, err := http.Post(e.envd+"/init", "application/json", strings.NewReader(`{"accessToken":"`+c.EnvdAccessToken+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		var out struct {
			Sandboxes map[string]struct {
				CPUCount int   `json:"cpuCount"`
				MemTotal int64 `json:"memTotal"`
			} `json:"sandboxes"`
		}
		r := e.do(http.MethodGet, "/sandboxes/metrics?sandbox_ids="+c.SandboxID+","+paused.SandboxID, e.key, nil)
		r.json(t, &out)
		if m, ok := out.Sandboxes[c.SandboxID]; r.status != http.StatusOK || !ok || m.CPUCount < 1 || m.MemTotal <= 0 || len(out.Sandboxes) != 1 {
			t.Fatalf("metrics: %d %s", r.status, r.body)
		}
		if r := e.do(http.MethodGet, "/sandboxes/metrics?sandbox_ids="+c.SandboxID, e.keyB, nil); r.status != http.StatusNotFound {
			t.Errorf("other team: %d", r.status)
		}
		if r := e.do(http.MethodGet, "/sandboxes/metrics", e.key, nil); r.status != http.StatusBadRequest {
			t.Errorf("no ids: %d", r.status)
		}
	})
}
