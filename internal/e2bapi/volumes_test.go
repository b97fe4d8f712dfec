package e2bapi_test

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

// TestVolumes drives the Volume routes as the SDK calls them: management
// with the team key (responses checked against E2B's spec), the content
// API with the volume's bearer token.
func TestVolumes(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, nil)
		e.host.VolumesDir = t.TempDir()
		r := e.do(http.MethodPost, "/volumes", e.key, map[string]string{"name": "data"})
		if r.status != http.StatusCreated {
			t.Fatalf("create: %d %s", r.status, r.body)
		}
		var v struct{ VolumeID, Name, Token string }
		r.json(t, &v)
		if v.VolumeID == "" || v.Name != "data" || v.Token == "" {
			t.Fatalf("created %+v", v)
		}
		for _, tc := range []struct {
			method, path, key string
			body              any
			status            int
		}{
			{http.MethodPost, "/volumes", e.key, map[string]string{"name": "a b"}, http.StatusBadRequest},
			{http.MethodPost, "/volumes", e.key, map[string]string{"name": "data"}, http.StatusConflict},
			{http.MethodGet, "/volumes", e.key, nil, http.StatusOK},
			{http.MethodGet, "/volumes/" + v.VolumeID, e.key, nil, http.StatusOK},
			{http.MethodGet, "/volumes/" + v.VolumeID, e.keyB, nil, http.StatusNotFound},
			{http.MethodDelete, "/volumes/" + v.VolumeID, e.keyB, nil, http.StatusNotFound},
			{http.MethodGet, "/volumes/" + v.VolumeID, "", nil, http.StatusUnauthorized},
		} {
			if r := e.do(tc.method, tc.path, tc.key, tc.body); r.status != tc.status {
				t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, r.status, r.body, tc.status)
			}
		}

		content := func(method, path, token string, body io.Reader) (int, string) {
			t.Helper()
			req, err := http.NewRequest(method, e.url+"/volumecontent/"+v.VolumeID+path, body)
			if err != nil {
				t.Fatal(err)
			}
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			b, _ := io.ReadAll(res.Body)
			return res.StatusCode, string(b)
		}
		for _, tc := range []struct {
			method, path, token string
			body                string
			status              int
			want                string
		}{
			{"PUT", "/file?path=/docs/a.txt&mode=416", v.Token, "hello", http.StatusCreated, `"mode":416`},
			{"GET", "/file?path=/docs/a.txt", v.Token, "", http.StatusOK, "hello"},
			{"GET", "/file?path=/docs/a.txt", "", "", http.StatusUnauthorized, "Bearer"},
			{"GET", "/file?path=/docs/a.txt", "wrong", "", http.StatusUnauthorized, "invalid volume token"},
			{"GET", "/file?path=/nope", v.Token, "", http.StatusNotFound, ""},
			{"GET", "/path?path=/docs", v.Token, "", http.StatusOK, `"type":"directory"`},
			{"GET", "/dir?path=/&depth=2", v.Token, "", http.StatusOK, `"path":"/docs/a.txt"`},
			{"POST", "/dir?path=/x/y&force=true", v.Token, "", http.StatusCreated, `"path":"/x/y"`},
			{"POST", "/dir?path=/x/y", v.Token, "", http.StatusConflict, ""},
			{"PATCH", "/path?path=/docs/a.txt", v.Token, `{"mode":420}`, http.StatusOK, `"mode":420`},
			{"DELETE", "/path?path=/x", v.Token, "", http.StatusNoContent, ""},
			{"GET", "/path?path=/x/y", v.Token, "", http.StatusNotFound, ""},
			{"GET", "/file?path=/../../etc/passwd", v.Token, "", http.StatusNotFound, ""},
			{"GET", "/path", v.Token, "", http.StatusBadRequest, "path"},
		} {
			var body io.Reader
			if tc.body != "" {
				body = bytes.NewBufferString(tc.body)
			}
			status, got := content(tc.method, tc.path, tc.token, body)
			if status != tc.status || !strings.Contains(got, tc.want) {
				t.Errorf("%s %s: %d %s, want %d with %q", tc.method, tc.path, status, got, tc.status, tc.want)
			}
		}

		// A read the host cuts short is an error for the client, not a
		// shorter file.
		if status, _ := content("PUT", "/file?path=/big", v.Token, bytes.NewReader(make([]byte, 256<<10))); status != http.StatusCreated {
			t.Fatalf("write /big: %d", status)
		}
		e.host.ReadCut.Store(100 << 10)
		req, _ := http.NewRequest("GET", e.url+"/volumecontent/"+v.VolumeID+"/file?path=/big", nil)
		req.Header.Set("Authorization", "Bearer "+v.Token)
		if res, err := http.DefaultClient.Do(req); err == nil {
			b, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err == nil {
				t.Errorf("a read cut short by the host ended cleanly with %d of %d bytes", len(b), 256<<10)
			}
		}
		e.host.ReadCut.Store(0)

		// Mounted: 409 on delete, the mount in the sandbox's detail.
		c := e.create(e.key, map[string]any{"templateID": "base", "volumeMounts": []any{map[string]string{"name": "data", "path": "/mnt/data"}}})
		for _, path := range []string{"/sandboxes/" + c.SandboxID, "/sandboxes", "/v2/sandboxes"} {
			if r := e.do(http.MethodGet, path, e.key, nil); !strings.Contains(string(r.body), `"volumeMounts":[{"name":"data","path":"/mnt/data"}]`) {
				t.Errorf("%s: %s", path, r.body)
			}
		}
		// A sandbox with volumes pauses and resumes like any other.
		if r := e.do(http.MethodPost, "/sandboxes/"+c.SandboxID+"/pause", e.key, nil); r.status != http.StatusNoContent {
			t.Errorf("pause with volumes: %d %s", r.status, r.body)
		}
		if r := e.do(http.MethodPost, "/sandboxes/"+c.SandboxID+"/resume", e.key, nil); r.status != http.StatusCreated {
			t.Errorf("resume with volumes: %d %s", r.status, r.body)
		}
		if r := e.do(http.MethodDelete, "/volumes/"+v.VolumeID, e.key, nil); r.status != http.StatusConflict {
			t.Errorf("delete mounted: %d %s", r.status, r.body)
		}
		e.do(http.MethodDelete, "/sandboxes/"+c.SandboxID, e.key, nil)
		if r := e.do(http.MethodDelete, "/volumes/"+v.VolumeID, e.key, nil); r.status != http.StatusNoContent {
			t.Errorf("delete: %d %s", r.status, r.body)
		}
		if r := e.do(http.MethodGet, "/volumes/"+v.VolumeID, e.key, nil); r.status != http.StatusNotFound {
			t.Errorf("get deleted: %d %s", r.status, r.body)
		}
	})
}
