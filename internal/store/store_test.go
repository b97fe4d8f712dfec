package store_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

var _ service.Store = (*store.DB)(nil)

// forEachEngine runs fn as a parallel subtest on a fresh store per engine:
// always SQLite, and PostgreSQL when HEARTH_TEST_POSTGRES_URL is set
// (scripts/pgtest.sh sets it); otherwise the postgres subtest is skipped.
func forEachEngine(t *testing.T, fn func(t *testing.T, db *store.DB)) {
	t.Helper()
	t.Parallel()
	for _, e := range storetest.Engines() {
		t.Run(string(e), func(t *testing.T) {
			t.Parallel()
			fn(t, storetest.Open(t, e))
		})
	}
}

// forEachEngineOpts is forEachEngine for tests that open stores themselves.
func forEachEngineOpts(t *testing.T, fn func(t *testing.T, opts store.Options)) {
	t.Helper()
	t.Parallel()
	for _, e := range storetest.Engines() {
		t.Run(string(e), func(t *testing.T) {
			t.Parallel()
			fn(t, storetest.Options(t, e))
		})
	}
}

func ctx(t testing.TB) context.Context { return t.Context() }

// want fails the test unless err matches target (nil: no error).
func want(t testing.TB, err, target error) {
	t.Helper()
	switch {
	case target == nil && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case target != nil && !errors.Is(err, target):
		t.Fatalf("error = %v, want %v", err, target)
	}
}

func mustUser(t testing.TB, db *store.DB, email string) (store.User, store.Team) {
	t.Helper()
	u, team, err := db.CreateUserWithTeam(ctx(t), store.User{Email: email, PasswordHash: "h"}, email+"'s team")
	want(t, err, nil)
	return u, team
}

func mustSandbox(t testing.TB, db *store.DB, s store.Sandbox) store.Sandbox {
	t.Helper()
	if s.TemplateID == "" {
		s.TemplateID = "base"
	}
	if s.VCPUs == 0 {
		s.VCPUs, s.MemoryMB = 1, 512
	}
	out, err := db.CreateSandbox(ctx(t), s)
	want(t, err, nil)
	return out
}

func TestRebind(t *testing.T) {
	t.Parallel()
	for in, out := range map[string]string{
		`SELECT 1`:                           `SELECT 1`,
		`a = ? AND b IN (?, ?)`:              `a = $1 AND b IN ($2, $3)`,
		`x = '?' AND y = ? AND z = 'it''s?'`: `x = '?' AND y = $1 AND z = 'it''s?'`,
	} {
		if got := store.Rebind(in); got != out {
			t.Errorf("rebind(%q) = %q, want %q", in, got, out)
		}
	}
}

func TestAESSealer(t *testing.T) {
	t.Parallel()
	key := make([]byte, 32)
	rand.Read(key)
	s, err := store.NewAESSealer(key)
	want(t, err, nil)
	msg := []byte("secret token")
	a, err := s.Seal(msg)
	want(t, err, nil)
	b, _ := s.Seal(msg)
	if bytes.Equal(a, b) {
		t.Error("two seals of one message are equal: nonce reused")
	}
	if bytes.Contains(a, msg) {
		t.Error("sealed value contains the plaintext")
	}
	got, err := s.Open(a)
	want(t, err, nil)
	if !bytes.Equal(got, msg) {
		t.Fatalf("open = %q, want %q", got, msg)
	}
	tampered := bytes.Clone(a)
	tampered[len(tampered)-1] ^= 1
	if _, err := s.Open(tampered); err == nil {
		t.Error("tampered value opened")
	}
	key2 := bytes.Clone(key)
	key2[0] ^= 1
	other, _ := store.NewAESSealer(key2)
	if _, err := other.Open(a); err == nil {
		t.Error("value opened with another key")
	}
	if _, err := s.Open(nil); err == nil {
		t.Error("empty value opened")
	}
	if _, err := store.NewAESSealer(key[:16]); err == nil {
		t.Error("16-byte key accepted for AES-256")
	}
}

func TestOpenRequiresSealer(t *testing.T) {
	t.Parallel()
	_, err := store.Open(ctx(t), store.Options{DSN: t.TempDir() + "/x.db"})
	if err == nil {
		t.Fatal("Open without a sealer succeeded")
	}
}

func TestOpenPicksDriverFromDSN(t *testing.T) {
	t.Parallel()
	if !store.IsPostgresURL("postgres://u@h/db") || !store.IsPostgresURL("postgresql://h/db") || store.IsPostgresURL("/var/lib/hearth.db") {
		t.Fatal("IsPostgresURL misclassifies")
	}
	opts := storetest.Options(t, storetest.SQLite)
	opts.Driver = ""
	db := storetest.OpenWith(t, opts)
	if db.Driver() != store.DriverSQLite {
		t.Fatalf("driver = %q", db.Driver())
	}
}

func TestMigrationsIdempotentOnReopen(t *testing.T) {
	forEachEngineOpts(t, func(t *testing.T, opts store.Options) {
		db1 := storetest.OpenWith(t, opts)
		u, _ := mustUser(t, db1, "a@example.com")
		version := func(db *store.DB) (v int64) {
			err := store.RawSQL(db).QueryRowContext(ctx(t), `SELECT MAX(version_id) FROM goose_db_version`).Scan(&v)
			want(t, err, nil)
			return v
		}
		v1 := version(db1)
		db1.Close()
		db2 := storetest.OpenWith(t, opts) // applies nothing, keeps data
		if v2 := version(db2); v2 != v1 || v1 < 1 {
			t.Fatalf("schema version %d after reopen, %d before", v2, v1)
		}
		got, err := db2.GetUserByEmail(ctx(t), "a@example.com")
		want(t, err, nil)
		if got.ID != u.ID {
			t.Fatalf("user %q after reopen, want %q", got.ID, u.ID)
		}
		db3 := storetest.OpenWith(t, opts) // two open stores on one database
		want(t, db3.Ping(ctx(t)), nil)
		var teams int
		want(t, store.RawSQL(db3).QueryRowContext(ctx(t), `SELECT COUNT(*) FROM teams WHERE name = 'platform'`).Scan(&teams), nil)
		if teams != 1 {
			t.Fatalf("%d platform teams", teams)
		}
	})
}

func TestPlatformTeam(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		team, err := db.GetTeam(ctx(t), store.PlatformTeamID)
		want(t, err, nil)
		if team.Name != "platform" || team.CreatedAt.IsZero() {
			t.Fatalf("platform team = %+v", team)
		}
	})
}

func TestSignup(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		u, team, err := db.CreateUserWithTeam(ctx(t), store.User{Email: " Ann@Example.COM", PasswordHash: "bcrypt"}, "ann")
		want(t, err, nil)
		if u.ID == "" || team.ID == "" || u.Email != "ann@example.com" || team.Name != "ann" {
			t.Fatalf("user %+v team %+v", u, team)
		}
		got, err := db.GetUserByEmail(ctx(t), "ANN@example.com")
		want(t, err, nil)
		if got != u {
			t.Fatalf("GetUserByEmail = %+v, want %+v", got, u)
		}
		byID, err := db.GetUserByID(ctx(t), u.ID)
		want(t, err, nil)
		if byID != u {
			t.Fatalf("GetUserByID = %+v, want %+v", byID, u)
		}
		teams, err := db.ListTeamsForUser(ctx(t), u.ID)
		want(t, err, nil)
		if len(teams) != 1 || teams[0].Team != team || teams[0].Role != store.RoleOwner {
			t.Fatalf("teams = %+v", teams)
		}
		m, err := db.GetMembership(ctx(t), team.ID, u.ID)
		want(t, err, nil)
		if m.Role != store.RoleOwner {
			t.Fatalf("membership = %+v", m)
		}

		_, _, err = db.CreateUserWithTeam(ctx(t), store.User{Email: "ann@EXAMPLE.com", PasswordHash: "x"}, "again")
		want(t, err, store.ErrConflict)

		_, err = db.GetUserByEmail(ctx(t), "nobody@example.com")
		want(t, err, store.ErrNotFound)
		_, err = db.GetUserByID(ctx(t), "not-a-uuid")
		want(t, err, store.ErrNotFound)

		want(t, db.SetUserAdmin(ctx(t), "Ann@example.com", true), nil)
		got, _ = db.GetUserByEmail(ctx(t), u.Email)
		if !got.IsAdmin {
			t.Fatal("SetUserAdmin(true) did not stick")
		}
		want(t, db.SetUserAdmin(ctx(t), u.Email, false), nil)
		got, _ = db.GetUserByEmail(ctx(t), u.Email)
		if got.IsAdmin {
			t.Fatal("SetUserAdmin(false) did not stick")
		}
		want(t, db.SetUserAdmin(ctx(t), "nobody@example.com", true), store.ErrNotFound)
	})
}

func TestSignupIsAtomic(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		count := func(table string) (n int) {
			t.Helper()
			want(t, store.RawSQL(db).QueryRowContext(ctx(t), `SELECT COUNT(*) FROM `+table).Scan(&n), nil)
			return n
		}
		boom := errors.New("boom")
		for _, step := range []string{"user", "team", "membership"} {
			users, teams, members := count("users"), count("teams"), count("users_teams")
			store.SetSignupHook(db, func(s string) error {
				if s == step {
					return boom
				}
				return nil
			})
			_, _, err := db.CreateUserWithTeam(ctx(t), store.User{Email: step + "@example.com", PasswordHash: "h"}, "t")
			want(t, err, boom)
			_, err = db.GetUserByEmail(ctx(t), step+"@example.com")
			want(t, err, store.ErrNotFound)
			if count("users") != users || count("teams") != teams || count("users_teams") != members {
				t.Fatalf("failure after %q left rows behind", step)
			}
		}
		store.SetSignupHook(db, nil)
		// The email is still free.
		mustUser(t, db, "user@example.com")
	})
}

func TestAPIKeys(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		u, a := mustUser(t, db, "a@example.com")
		_, b := mustUser(t, db, "b@example.com")
		k, err := db.CreateAPIKey(ctx(t), store.APIKey{TeamID: a.ID, Name: "ci", Prefix: "e2b_1234", Hash: "aa11", CreatedBy: u.ID})
		want(t, err, nil)
		if k.ID == "" || k.CreatedAt.IsZero() || k.LastUsedAt != nil {
			t.Fatalf("created %+v", k)
		}
		k2, err := db.CreateAPIKey(ctx(t), store.APIKey{TeamID: a.ID, Name: "other", Prefix: "e2b_5678", Hash: "bb22"})
		want(t, err, nil)
		_, err = db.CreateAPIKey(ctx(t), store.APIKey{TeamID: b.ID, Name: "dup", Prefix: "x", Hash: "aa11"})
		want(t, err, store.ErrConflict)

		got, err := db.GetAPIKeyByHash(ctx(t), "aa11")
		want(t, err, nil)
		if got.ID != k.ID || got.TeamID != a.ID || got.CreatedBy != u.ID || !got.CreatedAt.Equal(k.CreatedAt) {
			t.Fatalf("by hash = %+v, want %+v", got, k)
		}
		_, err = db.GetAPIKeyByHash(ctx(t), "ffff")
		want(t, err, store.ErrNotFound)

		t1 := time.Date(2026, 11, 28, 10, 0, 0, 123456789, time.UTC)
		want(t, db.TouchAPIKey(ctx(t), k.ID, t1), nil)
		want(t, db.TouchAPIKey(ctx(t), k.ID, t1.Add(-time.Hour)), nil) // older: ignored
		got, _ = db.GetAPIKeyByHash(ctx(t), "aa11")
		if got.LastUsedAt == nil || !got.LastUsedAt.Equal(t1.Truncate(time.Microsecond)) {
			t.Fatalf("last used = %v, want %v", got.LastUsedAt, t1)
		}
		want(t, db.TouchAPIKey(ctx(t), "missing", t1), store.ErrNotFound)

		keys, err := db.ListAPIKeys(ctx(t), a.ID)
		want(t, err, nil)
		if len(keys) != 2 || keys[0].ID != k.ID || keys[1].ID != k2.ID {
			t.Fatalf("list = %+v", keys)
		}
		if other, _ := db.ListAPIKeys(ctx(t), b.ID); len(other) != 0 {
			t.Fatalf("team b sees %+v", other)
		}
		want(t, db.DeleteAPIKey(ctx(t), b.ID, k.ID), store.ErrNotFound)
		want(t, db.DeleteAPIKey(ctx(t), a.ID, k.ID), nil)
		want(t, db.DeleteAPIKey(ctx(t), a.ID, k.ID), store.ErrNotFound)
		_, err = db.GetAPIKeyByHash(ctx(t), "aa11")
		want(t, err, store.ErrNotFound)
	})
}

func TestTemplateVisibility(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		_, a := mustUser(t, db, "a@example.com")
		_, b := mustUser(t, db, "b@example.com")
		tpl := func(team, name string, kind sandbox.TemplateKind) store.Template {
			t.Helper()
			out, err := db.CreateTemplate(ctx(t), store.Template{TeamID: team, Name: name, Kind: kind, VCPUs: 2, MemoryMB: 1024})
			want(t, err, nil)
			return out
		}
		base, err := db.UpsertPlatformTemplate(ctx(t), store.Template{Name: "base", Kind: sandbox.KindBase, VCPUs: 1, MemoryMB: 512})
		want(t, err, nil)
		if base.TeamID != store.PlatformTeamID || base.DiskSizeMB != sandbox.DefaultDiskSizeMB {
			t.Fatalf("platform template = %+v", base)
		}
		again, err := db.UpsertPlatformTemplate(ctx(t), store.Template{Name: "base", Kind: sandbox.KindBase, VCPUs: 2, MemoryMB: 2048, DiskSizeMB: 4096})
		want(t, err, nil)
		if again.ID != base.ID || !again.CreatedAt.Equal(base.CreatedAt) || again.VCPUs != 2 || again.MemoryMB != 2048 || again.DiskSizeMB != 4096 {
			t.Fatalf("upsert = %+v, first = %+v", again, base)
		}
		tiny, err := db.UpsertPlatformTemplate(ctx(t), store.Template{Name: "tiny", Kind: sandbox.KindBase, VCPUs: 1, MemoryMB: 256})
		want(t, err, nil)

		aSnap := tpl(a.ID, "my-snap", sandbox.KindSnapshot)
		aTiny := tpl(a.ID, "tiny", sandbox.KindBase) // shadows the platform "tiny" for team a
		bSnap := tpl(b.ID, "b-snap", sandbox.KindSnapshot)
		_, err = db.CreateTemplate(ctx(t), store.Template{TeamID: a.ID, Name: "my-snap", Kind: sandbox.KindSnapshot, VCPUs: 1, MemoryMB: 1})
		want(t, err, store.ErrConflict)
		tpl(b.ID, "my-snap", sandbox.KindSnapshot) // same name in another team is fine

		for _, tc := range []struct {
			team, key, wantID string
			err               error
		}{
			{a.ID, "base", base.ID, nil},
			{a.ID, base.ID, base.ID, nil},
			{a.ID, "tiny", aTiny.ID, nil}, // the team's own wins
			{b.ID, "tiny", tiny.ID, nil},
			{a.ID, tiny.ID, tiny.ID, nil}, // by ID the platform one is still reachable
			{a.ID, "my-snap", aSnap.ID, nil},
			{a.ID, aSnap.ID, aSnap.ID, nil},
			{a.ID, bSnap.ID, "", store.ErrNotFound},
			{a.ID, "b-snap", "", store.ErrNotFound},
			{b.ID, aTiny.ID, "", store.ErrNotFound},
			{a.ID, "nope", "", store.ErrNotFound},
		} {
			got, err := db.GetTemplateByTeam(ctx(t), tc.team, tc.key)
			want(t, err, tc.err)
			if got.ID != tc.wantID {
				t.Errorf("GetTemplateByTeam(%s, %q) = %q, want %q", tc.team, tc.key, got.ID, tc.wantID)
			}
		}

		ids := func(ts []store.Template, err error) []string {
			t.Helper()
			want(t, err, nil)
			var out []string
			for _, x := range ts {
				out = append(out, x.ID)
			}
			return out
		}
		eq := func(name string, got, exp []string) {
			t.Helper()
			if len(got) != len(exp) {
				t.Fatalf("%s = %v, want %v", name, got, exp)
			}
			for i := range got {
				if got[i] != exp[i] {
					t.Fatalf("%s = %v, want %v", name, got, exp)
				}
			}
		}
		// By name; the team's own first on a tie.
		eq("list a", ids(db.ListTemplatesByTeam(ctx(t), a.ID)), []string{base.ID, aSnap.ID, aTiny.ID, tiny.ID})
		eq("list a snapshots", ids(db.ListTemplatesByTeamAndKind(ctx(t), a.ID, sandbox.KindSnapshot)), []string{aSnap.ID})
		eq("list a base", ids(db.ListTemplatesByTeamAndKind(ctx(t), a.ID, sandbox.KindBase)), []string{base.ID, aTiny.ID, tiny.ID})
		all := ids(db.ListAllTemplates(ctx(t)))
		if len(all) != 6 {
			t.Fatalf("all templates = %v", all)
		}

		got, err := db.GetTemplateByID(ctx(t), bSnap.ID)
		want(t, err, nil)
		if got != bSnap {
			t.Fatalf("by id = %+v, want %+v", got, bSnap)
		}

		want(t, db.DeleteTemplate(ctx(t), a.ID, base.ID), store.ErrNotFound) // a platform template
		want(t, db.DeleteTemplate(ctx(t), a.ID, bSnap.ID), store.ErrNotFound)
		want(t, db.DeleteTemplate(ctx(t), a.ID, aTiny.ID), nil)
		got, err = db.GetTemplateByTeam(ctx(t), a.ID, "tiny")
		want(t, err, nil)
		if got.ID != tiny.ID {
			t.Fatalf("after deleting the team's tiny, got %q, want the platform's", got.ID)
		}
		want(t, db.DeleteTemplate(ctx(t), store.PlatformTeamID, tiny.ID), nil)
	})
}

// TestCrossTeamNotFound: every team-scoped read and delete treats another
// team's row as missing.
func TestCrossTeamNotFound(t *testing.T) {
	forEachEngine(t, func(t *testing.T, db *store.DB) {
		ua, a := mustUser(t, db, "a@example.com")
		_, b := mustUser(t, db, "b@example.com")
		key, err := db.CreateAPIKey(ctx(t), store.APIKey{TeamID: a.ID, Name: "k", Prefix: "p", Hash: "h"})
		want(t, err, nil)
		tpl, err := db.CreateTemplate(ctx(t), store.Template{TeamID: a.ID, Name: "snap", Kind: sandbox.KindSnapshot, VCPUs: 1, MemoryMB: 128})
		want(t, err, nil)
		sb := mustSandbox(t, db, store.Sandbox{TeamID: a.ID})

		for name, call := range map[string]func() error{
			"GetSandbox":        func() error { _, err := db.GetSandbox(ctx(t), b.ID, sb.ID); return err },
			"GetTemplateByTeam": func() error { _, err := db.GetTemplateByTeam(ctx(t), b.ID, tpl.ID); return err },
			"GetTemplateByName": func() error { _, err := db.GetTemplateByTeam(ctx(t), b.ID, tpl.Name); return err },
			"GetMembership":     func() error { _, err := db.GetMembership(ctx(t), b.ID, ua.ID); return err },
			"DeleteTemplate":    func() error { return db.DeleteTemplate(ctx(t), b.ID, tpl.ID) },
			"DeleteAPIKey":      func() error { return db.DeleteAPIKey(ctx(t), b.ID, key.ID) },
		} {
			if err := call(); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("%s across teams: %v, want ErrNotFound", name, err)
			}
		}
		// Lists of team b do not show team a's rows, even with a's cursor.
		if l, err := db.ListSandboxes(ctx(t), b.ID, store.SandboxFilter{}); err != nil || len(l) != 0 {
			t.Errorf("ListSandboxes(b) = %v, %v", l, err)
		}
		if l, err := db.ListAPIKeys(ctx(t), b.ID); err != nil || len(l) != 0 {
			t.Errorf("ListAPIKeys(b) = %v, %v", l, err)
		}
		// Nothing was deleted by the attempts above.
		_, err = db.GetSandbox(ctx(t), a.ID, sb.ID)
		want(t, err, nil)
		_, err = db.GetTemplateByTeam(ctx(t), a.ID, tpl.ID)
		want(t, err, nil)
		_, err = db.GetAPIKeyByHash(ctx(t), "h")
		want(t, err, nil)
	})
}

// TestSQLitePragmas: every pooled connection runs in WAL mode with foreign
// keys enforced and a busy timeout (the DSN carries them).
func TestSQLitePragmas(t *testing.T) {
	t.Parallel()
	db := storetest.Open(t, storetest.SQLite)
	raw := store.RawSQL(db)
	conns := make([]*sql.Conn, 3) // distinct connections of the pool
	for i := range conns {
		c, err := raw.Conn(ctx(t))
		want(t, err, nil)
		defer c.Close()
		conns[i] = c
	}
	for i, c := range conns {
		var mode string
		var fk, busy int
		want(t, c.QueryRowContext(ctx(t), `PRAGMA journal_mode`).Scan(&mode), nil)
		want(t, c.QueryRowContext(ctx(t), `PRAGMA foreign_keys`).Scan(&fk), nil)
		want(t, c.QueryRowContext(ctx(t), `PRAGMA busy_timeout`).Scan(&busy), nil)
		if mode != "wal" || fk != 1 || busy < 1000 {
			t.Fatalf("conn %d: journal_mode=%s foreign_keys=%d busy_timeout=%d", i, mode, fk, busy)
		}
	}
	_, err := db.CreateAPIKey(ctx(t), store.APIKey{TeamID: "no-such-team", Name: "k", Prefix: "p", Hash: "h"})
	if err == nil {
		t.Fatal("foreign key not enforced")
	}
}

// Two control planes starting at once on one new database must both come
// up: migrations are serialised by an advisory lock on PostgreSQL (and by
// SQLite's write lock), and each runs every migration exactly once.
func TestConcurrentMigrations(t *testing.T) {
	forEachEngineOpts(t, func(t *testing.T, opts store.Options) {
		const n = 4
		errs := make(chan error, n)
		dbs := make(chan *store.DB, n)
		for range n {
			go func() {
				c, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				db, err := store.Open(c, opts)
				errs <- err
				dbs <- db
			}()
		}
		for range n {
			if err := <-errs; err != nil {
				t.Errorf("concurrent open: %v", err)
			}
			if db := <-dbs; db != nil {
				t.Cleanup(func() { db.Close() })
			}
		}
		if t.Failed() {
			return
		}
		db := storetest.OpenWith(t, opts)
		var applied, distinct int
		want(t, store.RawSQL(db).QueryRowContext(ctx(t),
			`SELECT COUNT(*), COUNT(DISTINCT version_id) FROM goose_db_version WHERE version_id > 0`).Scan(&applied, &distinct), nil)
		if applied != distinct || applied < 1 {
			t.Fatalf("goose_db_version has %d rows for %d versions: a migration ran twice", applied, distinct)
		}
	})
}
