package e2bapi_test

import (
	"net/http"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
	"github.com/hearth-sandbox/hearth/internal/templatebuild/ocitest"
)

// TestBuildFromPrivateRegistry: the SDK's fromImage(ref, {username,
// password}) against a registry behind basic auth. Credentials it refuses
// (or none) are a 400 naming the registry when the build is triggered, and
// the template can be built again at once; the right ones start the build;
// the password is in no stored record.
func TestBuildFromPrivateRegistry(t *testing.T) {
	const user, pass = "ada", "pa55-never-stored"
	reg := ocitest.PrivateRegistry(t, user, pass)
	ref := reg + "/team/app:1"
	ocitest.PushPrivate(t, ref, user, pass, v1.Config{}, ocitest.Layer(t, ocitest.Entry{Name: "etc", Dir: true}))
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		e := newEnv(t, db, nil)
		trigger := func(registry map[string]any) (resp, string) {
			t.Helper()
			r := e.do(http.MethodPost, "/v3/templates", e.key, map[string]any{"name": "private-app", "cpuCount": 1, "memoryMB": 256})
			if r.status != http.StatusAccepted {
				t.Fatalf("request build: %d %s", r.status, r.body)
			}
			var rb struct{ TemplateID, BuildID string }
			r.json(t, &rb)
			body := map[string]any{"fromImage": ref, "steps": []any{}}
			if registry != nil {
				body["fromImageRegistry"] = registry
			}
			return e.do(http.MethodPost, "/v2/templates/"+rb.TemplateID+"/builds/"+rb.BuildID, e.key, body), rb.BuildID
		}
		tests := []struct {
			name     string
			registry map[string]any
			want     string
		}{
			{"wrong password", map[string]any{"type": "registry", "username": user, "password": "wrong"}, "registry " + reg + " refused the credentials"},
			{"no credentials", nil, "registry " + reg + " refused " + ref + " without credentials"},
		}
		for _, tc := range tests {
			r, _ := trigger(tc.registry)
			if r.status != http.StatusBadRequest || !strings.Contains(string(r.body), tc.want) {
				t.Errorf("%s: %d %s, want 400 with %q", tc.name, r.status, r.body, tc.want)
			}
		}
		// Right after a refusal the template builds (no 409): the refused
		// reservation ended.
		r, buildID := trigger(map[string]any{"type": "registry", "username": user, "password": pass})
		if r.status != http.StatusAccepted {
			t.Fatalf("right credentials: %d %s", r.status, r.body)
		}
		e.svc.WaitBuilds()
		b, err := db.GetBuild(t.Context(), buildID)
		if err != nil {
			t.Fatal(err)
		}
		logs, err := db.ListBuildLogs(t.Context(), buildID, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		all := b.Spec + b.Error
		for _, l := range logs {
			all += l.Message
		}
		if strings.Contains(all, pass) {
			t.Errorf("stored build: spec %s, error %s, logs %+v", b.Spec, b.Error, logs)
		}
	})
}
