package api

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

func gz(tb testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// Builds' bad input and team scoping through the API. The hosts here
// cannot build (a fake host): real builds are tested with VMs in
// internal/agent and through the e2b SDK in tests/e2b.
func TestBuildsBadInputAndScoping(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, envOpts{})
		a := e.signup("a@example.com")
		b := e.signup("b@example.com")

		up := e.do("PUT", "/v1/build-contexts", gz(t, []byte("not really a tar")), apiKey(a.key))
		e.want(up, http.StatusCreated, "upload context")
		var h struct{ Hash string }
		up.json(t, &h)
		if len(h.Hash) != 64 {
			t.Fatalf("hash %q", h.Hash)
		}
		big := make([]byte, 2<<20)
		r := e.do("PUT", "/v1/build-contexts", big, apiKey(a.key))
		e.want(r, http.StatusRequestEntityTooLarge, "oversized context")

		r = e.do("POST", "/v1/templates/web/builds", map[string]any{"dockerfile": "FROM base\nRUN true\nCOPY --bogus a b\n", "context_hash": h.Hash}, apiKey(a.key))
		e.want(r, http.StatusBadRequest, "syntax error")
		if !strings.Contains(string(r.body), "line 3") {
			t.Errorf("syntax error does not name the line: %s", r.body)
		}
		r = e.do("POST", "/v1/templates/web/builds", map[string]any{"dockerfile": "FROM base\nCOPY a /a\n"}, apiKey(a.key))
		e.want(r, http.StatusBadRequest, "COPY without a context")

		// A host that cannot build: the build fails, the template is not
		// usable, nothing is left half-made.
		r = e.do("POST", "/v1/templates/web/builds", map[string]any{"dockerfile": "FROM base\nRUN true\n"}, apiKey(a.key))
		e.want(r, http.StatusAccepted, "build")
		var bd struct{ ID, Status string }
		r.json(t, &bd)
		deadline := time.Now().Add(10 * time.Second)
		for bd.Status != "error" && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			e.do("GET", "/v1/templates/web/builds/"+bd.ID, nil, apiKey(a.key)).json(t, &bd)
		}
		if bd.Status != "error" {
			t.Fatalf("build on a host that cannot build: %+v", bd)
		}
		r = e.do("GET", "/v1/templates/web/builds/"+bd.ID+"/logs", nil, apiKey(a.key))
		e.want(r, http.StatusOK, "logs")
		if !strings.Contains(string(r.body), "cannot build templates") {
			t.Errorf("logs lack the failure: %s", r.body)
		}
		r = e.do("POST", "/v1/sandboxes", map[string]any{"template": "web"}, apiKey(a.key))
		e.want(r, http.StatusConflict, "sandbox from a template without a build")

		// One build of a template at a time.
		p := service.Principal{TeamID: a.teamID}
		if _, _, err := e.svc.NewBuild(t.Context(), p, service.NewBuildInput{Name: "web"}); err != nil {
			t.Fatal(err)
		}
		_, _, err := e.svc.NewBuild(t.Context(), p, service.NewBuildInput{Name: "web"})
		if service.KindOf(err) != service.KindConflict {
			t.Errorf("second concurrent build: %v, want a conflict", err)
		}
		r = e.do("POST", "/v1/templates/web/builds", map[string]any{"dockerfile": "FROM base\n"}, apiKey(a.key))
		e.want(r, http.StatusConflict, "second build over HTTP")

		// Team B sees none of it, exactly like a template that does not exist.
		for _, pr := range []struct{ method, path string }{
			{"GET", "/v1/templates/web/builds"},
			{"GET", "/v1/templates/web/builds/" + bd.ID},
			{"GET", "/v1/templates/web/builds/" + bd.ID + "/logs"},
			{"POST", "/v1/templates/web/builds/" + bd.ID + "/cancel"},
			{"DELETE", "/v1/templates/web"},
		} {
			got := e.do(pr.method, pr.path, nil, apiKey(b.key))
			ref := e.do(pr.method, strings.Replace(pr.path, "/web", "/nothere", 1), nil, apiKey(b.key))
			if got.status != http.StatusNotFound || !bytes.Equal(got.body, ref.body) {
				t.Errorf("B %s %s = %d %s; a missing template gives %d %s", pr.method, pr.path, got.status, got.body, ref.status, ref.body)
			}
		}
		// B's own template of the same name is B's.
		r = e.do("POST", "/v1/templates/web/builds", map[string]any{"dockerfile": "FROM base\n"}, apiKey(b.key))
		e.want(r, http.StatusAccepted, "B builds its own web")
		// Platform templates need a platform admin.
		r = e.do("POST", "/v1/templates/shared/builds", map[string]any{"dockerfile": "FROM base\n", "platform": true}, apiKey(a.key))
		e.want(r, http.StatusForbidden, "platform build by a non-admin")
		e.svc.WaitBuilds()
	})
}
