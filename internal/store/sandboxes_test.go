package store_test

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

func TestSandboxRoundTrip(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		_, team := mustUser(t, db, "a@example.com")
		// Nanoseconds and a non-UTC zone: stored as UTC microseconds.
		zone := time.FixedZone("UTC+5:30", 5*3600+1800)
		created := time.Date(2026, 11, 28, 15, 4, 5, 123456789, zone)
		in := store.Sandbox{
			ID: "sbx1", TeamID: team.ID, TemplateID: "base", Status: sandbox.StateRunning, Host: "h1",
			VCPUs: 2, MemoryMB: 1024,
			Metadata:    map[string]string{"owner": "ci", "a.b": `q"uote`},
			Env:         map[string]string{"TOKEN": "s3cret", "EMPTY": ""},
			AccessToken: "tok_abc", TimeoutS: 300, EndAt: created.Add(5 * time.Minute),
			AutoPause: true, AutoResume: true, AllowInternet: true, Error: "",
			CreatedAt: created, UpdatedAt: created.Add(time.Nanosecond),
		}
		out, err := db.CreateSandbox(ctx(t), in)
		want(t, err, nil)
		if out.DiskSizeMB != sandbox.DefaultDiskSizeMB {
			t.Fatalf("disk size default = %d", out.DiskSizeMB)
		}
		wantCreated := time.Date(2026, 11, 28, 9, 34, 5, 123456000, time.UTC)
		if out.CreatedAt != wantCreated || out.EndAt != wantCreated.Add(5*time.Minute) || out.UpdatedAt != wantCreated {
			t.Fatalf("returned times %v %v %v, want %v", out.CreatedAt, out.EndAt, out.UpdatedAt, wantCreated)
		}
		for name, get := range map[string]func() (store.Sandbox, error){
			"GetSandbox":     func() (store.Sandbox, error) { return db.GetSandbox(ctx(t), team.ID, "sbx1") },
			"GetSandboxByID": func() (store.Sandbox, error) { return db.GetSandboxByID(ctx(t), "sbx1") },
		} {
			got, err := get()
			want(t, err, nil)
			// == on time.Time also compares the location: exact UTC round-trip.
			if !reflect.DeepEqual(got, out) {
				t.Fatalf("%s:\n got %+v\nwant %+v", name, got, out)
			}
		}
		_, err = db.CreateSandbox(ctx(t), in)
		want(t, err, store.ErrConflict)

		// Defaults: generated DNS-safe ID, creating, empty maps, no end.
		d := mustSandbox(t, db, store.Sandbox{TeamID: team.ID, DiskSizeMB: 4096})
		got, err := db.GetSandboxByID(ctx(t), d.ID)
		want(t, err, nil)
		if len(d.ID) != 20 || d.Status != sandbox.StateCreating || !got.EndAt.IsZero() || got.DiskSizeMB != 4096 ||
			got.Metadata == nil || got.Env == nil || got.AccessToken != "" || !reflect.DeepEqual(got, d) {
			t.Fatalf("defaults: got %+v, created %+v", got, d)
		}
		for _, c := range d.ID {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
				t.Fatalf("id %q is not DNS-label safe", d.ID)
			}
		}
	})
}

func TestExactTimeRoundTrip(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		_, team := mustUser(t, db, "a@example.com")
		for i, at := range []time.Time{
			time.Date(2026, 1, 2, 3, 4, 5, 999999999, time.UTC),
			time.Date(1999, 12, 31, 23, 59, 59, 1000, time.FixedZone("x", -7*3600)),
			time.Date(2100, 6, 1, 0, 0, 0, 0, time.UTC),
			time.Now(), // carries a monotonic reading
		} {
			s := mustSandbox(t, db, store.Sandbox{ID: fmt.Sprintf("t%d", i), TeamID: team.ID, CreatedAt: at, EndAt: at})
			exp := at.UTC().Truncate(time.Microsecond)
			got, err := db.GetSandboxByID(ctx(t), s.ID)
			want(t, err, nil)
			if got.CreatedAt != exp || got.EndAt != exp || s.CreatedAt != exp {
				t.Errorf("%v: stored %v / %v, returned %v, want %v", at, got.CreatedAt, got.EndAt, s.CreatedAt, exp)
			}
		}
	})
}

func TestUpdateSandboxStatus(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		_, team := mustUser(t, db, "a@example.com")
		s := mustSandbox(t, db, store.Sandbox{TeamID: team.ID})
		running := []sandbox.State{sandbox.StateRunning}

		got, err := db.UpdateSandboxStatus(ctx(t), s.ID, []sandbox.State{sandbox.StateCreating}, sandbox.StateRunning, "")
		want(t, err, nil)
		if got.Status != sandbox.StateRunning || got.UpdatedAt.Before(s.UpdatedAt) || got.ID != s.ID {
			t.Fatalf("after CAS: %+v", got)
		}
		_, err = db.UpdateSandboxStatus(ctx(t), s.ID, []sandbox.State{sandbox.StateCreating}, sandbox.StateRunning, "")
		want(t, err, store.ErrStaleState)
		_, err = db.UpdateSandboxStatus(ctx(t), "missing", running, sandbox.StatePausing, "")
		want(t, err, store.ErrNotFound)

		got, err = db.UpdateSandboxStatus(ctx(t), s.ID, []sandbox.State{sandbox.StatePausing, sandbox.StateRunning}, sandbox.StateError, "disk full")
		want(t, err, nil)
		if got.Status != sandbox.StateError || got.Error != "disk full" {
			t.Fatalf("error transition: %+v", got)
		}
		got, err = db.UpdateSandboxStatus(ctx(t), s.ID, []sandbox.State{sandbox.StateError}, sandbox.StateStopping, "")
		want(t, err, nil)
		if got.Error != "" {
			t.Fatalf("error not cleared: %+v", got)
		}
		if _, err := db.UpdateSandboxStatus(ctx(t), s.ID, nil, sandbox.StateStopped, ""); err == nil {
			t.Fatal("CAS with no from statuses succeeded")
		}
		stored, _ := db.GetSandboxByID(ctx(t), s.ID)
		if stored.Status != sandbox.StateStopping {
			t.Fatalf("stored status %q", stored.Status)
		}
	})
}

// TestConcurrentCAS: many callers race for one transition; exactly one
// wins and every other one gets ErrStaleState (not a busy/lock error).
func TestConcurrentCAS(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		_, team := mustUser(t, db, "a@example.com")
		const racers = 24
		for round := range 3 {
			s := mustSandbox(t, db, store.Sandbox{TeamID: team.ID, Status: sandbox.StateRunning})
			var (
				wg    sync.WaitGroup
				start = make(chan struct{})
				errs  = make([]error, racers)
			)
			for i := range racers {
				wg.Go(func() {
					<-start
					_, errs[i] = db.UpdateSandboxStatus(ctx(t), s.ID, []sandbox.State{sandbox.StateRunning}, sandbox.StatePausing, "")
				})
			}
			close(start)
			wg.Wait()
			wins := 0
			for _, err := range errs {
				switch {
				case err == nil:
					wins++
				case !errors.Is(err, store.ErrStaleState):
					t.Fatalf("round %d: racer failed with %v", round, err)
				}
			}
			if wins != 1 {
				t.Fatalf("round %d: %d winners, want 1", round, wins)
			}
		}
	})
}

// TestConcurrentWrites: parallel API calls that all write must all
// succeed (SQLite has one writer; the store queues them).
func TestConcurrentWrites(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		_, team := mustUser(t, db, "a@example.com")
		const n = 40
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				s, err := db.CreateSandbox(ctx(t), store.Sandbox{TeamID: team.ID, TemplateID: "base", VCPUs: 1, MemoryMB: 128})
				if err == nil {
					_, err = db.UpdateSandboxStatus(ctx(t), s.ID, []sandbox.State{sandbox.StateCreating}, sandbox.StateRunning, "")
				}
				if err == nil {
					_, _, err = db.CreateUserWithTeam(ctx(t), store.User{Email: fmt.Sprintf("u%d@example.com", i), PasswordHash: "h"}, "t")
				}
				errs[i] = err
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("writer %d: %v", i, err)
			}
		}
		l, err := db.ListSandboxes(ctx(t), team.ID, store.SandboxFilter{Statuses: []sandbox.State{sandbox.StateRunning}})
		want(t, err, nil)
		if len(l) != n {
			t.Fatalf("%d running sandboxes, want %d", len(l), n)
		}
	})
}

func TestListSandboxesPaging(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		_, team := mustUser(t, db, "a@example.com")
		_, other := mustUser(t, db, "b@example.com")
		base := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
		var all []store.Sandbox
		for i := range 30 {
			meta := map[string]string{"i": fmt.Sprint(i)}
			if i%3 == 0 {
				meta["env"], meta["team.name"] = "prod", `it's "x"`
			}
			status := sandbox.StateRunning
			if i%5 == 0 {
				status = sandbox.StatePaused
			}
			s := mustSandbox(t, db, store.Sandbox{
				// IDs descend while time ascends, and pairs share a
				// timestamp: the order must be (created_at, id).
				ID:        fmt.Sprintf("s%02d", 99-i),
				TeamID:    team.ID,
				Status:    status,
				Metadata:  meta,
				CreatedAt: base.Add(time.Duration(i/2) * time.Microsecond),
			})
			all = append(all, s)
		}
		mustSandbox(t, db, store.Sandbox{TeamID: other.ID, Metadata: map[string]string{"env": "prod"}, CreatedAt: base})
		slices.SortFunc(all, func(a, b store.Sandbox) int {
			if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
				return c
			}
			return bytes.Compare([]byte(a.ID), []byte(b.ID))
		})
		var prod []store.Sandbox
		for _, s := range all {
			if s.Metadata["env"] == "prod" {
				prod = append(prod, s)
			}
		}

		pageAll := func(f store.SandboxFilter, cursor func(store.Sandbox) string) []string {
			t.Helper()
			var ids []string
			for pages := 0; ; pages++ {
				if pages > 50 {
					t.Fatal("paging does not end")
				}
				page, err := db.ListSandboxes(ctx(t), team.ID, f)
				want(t, err, nil)
				if len(page) > f.Limit {
					t.Fatalf("page of %d, limit %d", len(page), f.Limit)
				}
				for _, s := range page {
					ids = append(ids, s.ID)
				}
				if len(page) < f.Limit {
					return ids
				}
				f.After = cursor(page[len(page)-1])
			}
		}
		idsOf := func(ss []store.Sandbox, keep func(store.Sandbox) bool) []string {
			var out []string
			for _, s := range ss {
				if keep(s) {
					out = append(out, s.ID)
				}
			}
			return out
		}
		byID := func(s store.Sandbox) string { return s.ID }
		everything := func(store.Sandbox) bool { return true }

		full, err := db.ListSandboxes(ctx(t), team.ID, store.SandboxFilter{})
		want(t, err, nil)
		if !reflect.DeepEqual(full, all) {
			t.Fatalf("unpaged list differs from the created sandboxes:\n got %v\nwant %v", idsOf(full, everything), idsOf(all, everything))
		}
		for _, cursor := range []func(store.Sandbox) string{byID, store.SandboxCursor} {
			if got, exp := pageAll(store.SandboxFilter{Limit: 4}, cursor), idsOf(all, everything); !slices.Equal(got, exp) {
				t.Fatalf("paged all:\n got %v\nwant %v", got, exp)
			}
			f := store.SandboxFilter{Limit: 3, Metadata: map[string]string{"env": "prod", "team.name": `it's "x"`}}
			if got, exp := pageAll(f, cursor), idsOf(prod, everything); !slices.Equal(got, exp) {
				t.Fatalf("paged metadata filter:\n got %v\nwant %v", got, exp)
			}
			f = store.SandboxFilter{Limit: 2, Metadata: map[string]string{"env": "prod"}, Statuses: []sandbox.State{sandbox.StateRunning}}
			exp := idsOf(prod, func(s store.Sandbox) bool { return s.Status == sandbox.StateRunning })
			if got := pageAll(f, cursor); !slices.Equal(got, exp) || len(exp) == 0 {
				t.Fatalf("paged metadata+status filter:\n got %v\nwant %v", got, exp)
			}
		}
		for _, f := range []store.SandboxFilter{
			{Metadata: map[string]string{"env": "dev"}},
			{Metadata: map[string]string{"env": "prod", "i": "1"}}, // both pairs must match
			{Metadata: map[string]string{"nokey": ""}},
			{Statuses: []sandbox.State{sandbox.StateStopped}},
		} {
			if l, err := db.ListSandboxes(ctx(t), team.ID, f); err != nil || len(l) != 0 {
				t.Errorf("filter %+v matched %v (%v)", f, idsOf(l, everything), err)
			}
		}
		if l, _ := db.ListSandboxes(ctx(t), team.ID, store.SandboxFilter{Metadata: map[string]string{"env": "prod", "i": "3"}}); len(l) != 1 || l[0].Metadata["i"] != "3" {
			t.Errorf("two-pair filter matched %v", idsOf(l, everything))
		}

		// A cursor stays valid when its sandbox is deleted; an ID does not.
		first, _ := db.ListSandboxes(ctx(t), team.ID, store.SandboxFilter{Limit: 5})
		last := first[len(first)-1]
		want(t, db.DeleteSandbox(ctx(t), last.ID), nil)
		rest, err := db.ListSandboxes(ctx(t), team.ID, store.SandboxFilter{After: store.SandboxCursor(last)})
		want(t, err, nil)
		if len(rest) != len(all)-5 || rest[0].ID != all[5].ID {
			t.Fatalf("after a deleted cursor: %d sandboxes from %v", len(rest), idsOf(rest[:1], everything))
		}
	})
}

func TestSealedColumns(t *testing.T) {
	const token, secret = "envd-token-7f3a9c", "hunter2-very-secret"
	// check stores a sandbox and reports whether its raw columns hold the
	// secrets in clear.
	check := func(t *testing.T, db *store.DB, wantPlain bool) string {
		t.Helper()
		_, team := mustUser(t, db, "a@example.com")
		s := mustSandbox(t, db, store.Sandbox{TeamID: team.ID, AccessToken: token, Env: map[string]string{"PASSWORD": secret}})
		var rawToken, rawEnv []byte
		err := store.RawSQL(db).QueryRowContext(ctx(t), store.Q(db, `SELECT access_token, env FROM sandboxes WHERE id = ?`), s.ID).Scan(&rawToken, &rawEnv)
		want(t, err, nil)
		if len(rawToken) == 0 || len(rawEnv) == 0 {
			t.Fatal("sealed columns are empty")
		}
		if got := bytes.Contains(rawToken, []byte(token)); got != wantPlain {
			t.Errorf("raw access_token contains the token: %v, want %v", got, wantPlain)
		}
		if got := bytes.Contains(rawEnv, []byte(secret)); got != wantPlain {
			t.Errorf("raw env contains the secret: %v, want %v", got, wantPlain)
		}
		got, err := db.GetSandboxByID(ctx(t), s.ID)
		want(t, err, nil)
		if got.AccessToken != token || got.Env["PASSWORD"] != secret {
			t.Fatalf("read back %q %v", got.AccessToken, got.Env)
		}
		return s.ID
	}
	forEachEngineOpts(t, func(t *testing.T, opts store.Options) {
		engine := storetest.Engine(opts.Driver)
		id := check(t, storetest.OpenWith(t, opts), false)

		// The same check on an unsealed store proves it sees plaintext.
		plain := storetest.Options(t, engine)
		plain.Sealer, plain.InsecurePlaintext = nil, true
		check(t, storetest.OpenWith(t, plain), true)

		// A store with another key cannot read the sealed row.
		other := opts
		other.Sealer = storetest.Options(t, engine).Sealer
		if _, err := storetest.OpenWith(t, other).GetSandboxByID(ctx(t), id); err == nil || errors.Is(err, store.ErrNotFound) {
			t.Fatalf("read with another key: %v, want a decryption error", err)
		}
	})
}

func TestSandboxHostsAndTimers(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		_, team := mustUser(t, db, "a@example.com")
		now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
		past := mustSandbox(t, db, store.Sandbox{TeamID: team.ID, Status: sandbox.StateRunning, EndAt: now.Add(-time.Second)})
		exact := mustSandbox(t, db, store.Sandbox{TeamID: team.ID, Status: sandbox.StateRunning, EndAt: now})
		mustSandbox(t, db, store.Sandbox{TeamID: team.ID, Status: sandbox.StateRunning, EndAt: now.Add(time.Microsecond)})
		mustSandbox(t, db, store.Sandbox{TeamID: team.ID, Status: sandbox.StatePaused, EndAt: now.Add(-time.Hour)})
		mustSandbox(t, db, store.Sandbox{TeamID: team.ID, Status: sandbox.StateRunning}) // no timeout
		exp, err := db.ListExpiredSandboxes(ctx(t), now)
		want(t, err, nil)
		if len(exp) != 2 || exp[0].ID != past.ID || exp[1].ID != exact.ID {
			t.Fatalf("expired = %v", exp)
		}

		want(t, db.SetSandboxEndAt(ctx(t), past.ID, now.Add(time.Hour), 3600), nil)
		got, _ := db.GetSandboxByID(ctx(t), past.ID)
		if got.EndAt != now.Add(time.Hour) || got.TimeoutS != 3600 || !got.UpdatedAt.After(past.UpdatedAt) {
			t.Fatalf("after SetSandboxEndAt: %+v", got)
		}
		want(t, db.SetSandboxEndAt(ctx(t), "missing", now, 1), store.ErrNotFound)

		want(t, db.SetSandboxHost(ctx(t), past.ID, "host-1"), nil)
		want(t, db.SetSandboxHost(ctx(t), exact.ID, "host-1"), nil)
		want(t, db.SetSandboxHost(ctx(t), "missing", "host-1"), store.ErrNotFound)
		on, err := db.ListSandboxesByHost(ctx(t), "host-1")
		want(t, err, nil)
		if len(on) != 2 || on[0].Host != "host-1" {
			t.Fatalf("by host = %v", on)
		}

		tplUse := func(statuses ...sandbox.State) int {
			n, err := db.CountSandboxesUsingTemplate(ctx(t), "base", statuses...)
			want(t, err, nil)
			return n
		}
		if n := tplUse(); n != 5 {
			t.Fatalf("using base: %d, want 5", n)
		}
		_, err = db.UpdateSandboxStatus(ctx(t), past.ID, []sandbox.State{sandbox.StateRunning}, sandbox.StateStopped, "")
		want(t, err, nil)
		if n := tplUse(); n != 4 {
			t.Fatalf("using base after a stop: %d, want 4", n)
		}
		if n := tplUse(sandbox.StatePaused); n != 1 {
			t.Fatalf("paused using base: %d, want 1", n)
		}

		want(t, db.DeleteSandbox(ctx(t), past.ID), nil)
		want(t, db.DeleteSandbox(ctx(t), past.ID), store.ErrNotFound)
		_, err = db.GetSandboxByID(ctx(t), past.ID)
		want(t, err, store.ErrNotFound)
	})
}
