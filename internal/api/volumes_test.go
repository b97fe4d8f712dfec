package api

import (
	"testing"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

func TestVolumes(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, envOpts{})
		e.host.VolumesDir = t.TempDir()
		a, b := e.signup("vol-a@example.com"), e.signup("vol-b@example.com")
		ka, kb := apiKey(a.key), apiKey(b.key)
		r := e.do("POST", "/v1/volumes", map[string]string{"name": "data"}, ka)
		e.want(r, 201, "create volume")
		var v apiwire.Volume
		r.json(t, &v)
		if v.ID == "" || v.Name != "data" || v.Host != testHostID || v.Token == "" {
			t.Fatalf("created %+v", v)
		}
		e.want(e.do("POST", "/v1/volumes", map[string]string{"name": "data"}, ka), 409, "same name")
		e.want(e.do("POST", "/v1/volumes", map[string]string{"name": "../x"}, ka), 400, "bad name")
		e.want(e.do("GET", "/v1/volumes/data", nil, ka), 200, "get by name")
		e.want(e.do("GET", "/v1/volumes/"+v.ID, nil, kb), 404, "other team's get")
		e.want(e.do("DELETE", "/v1/volumes/"+v.ID, nil, kb), 404, "other team's delete")
		r = e.do("GET", "/v1/volumes", nil, kb)
		e.want(r, 200, "other team's list")
		var vs []apiwire.Volume
		if r.json(t, &vs); len(vs) != 0 {
			t.Fatalf("other team lists %+v", vs)
		}

		e.want(e.do("POST", "/v1/sandboxes", map[string]any{"template": "base", "volumes": []map[string]string{{"volume": "data", "path": "/etc/x"}}}, ka), 400, "system dir")
		e.want(e.do("POST", "/v1/sandboxes", map[string]any{"template": "base", "volumes": []map[string]string{{"volume": v.ID, "path": "/data"}}}, kb), 404, "other team's volume")
		sb := e.createSandbox(a, map[string]any{"volumes": []map[string]string{{"volume": "data", "path": "/data"}}})
		if got := e.host.Creates(); got[len(got)-1].Volumes[0].VolumeID != v.ID {
			t.Fatalf("host got %+v", got[len(got)-1].Volumes)
		}
		e.want(e.do("POST", "/v1/sandboxes/"+sb.ID+"/pause", nil, ka), 200, "pause with volumes")
		e.want(e.do("POST", "/v1/sandboxes/"+sb.ID+"/resume", nil, ka), 200, "resume with volumes")
		e.want(e.do("DELETE", "/v1/volumes/data", nil, ka), 409, "delete mounted")
		e.want(e.do("DELETE", "/v1/sandboxes/"+sb.ID, nil, ka), 204, "destroy sandbox")
		e.want(e.do("DELETE", "/v1/volumes/data", nil, ka), 204, "delete")
		e.want(e.do("GET", "/v1/volumes/data", nil, ka), 404, "get deleted")
	})
}
