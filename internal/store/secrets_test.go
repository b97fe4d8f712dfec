package store_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

func TestSecrets(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		ctx := context.Background()
		_, teamA, err := db.CreateUserWithTeam(ctx, store.User{Email: "a@example.com", PasswordHash: "x"}, "a")
		if err != nil {
			t.Fatal(err)
		}
		_, teamB, err := db.CreateUserWithTeam(ctx, store.User{Email: "b@example.com", PasswordHash: "x"}, "b")
		if err != nil {
			t.Fatal(err)
		}
		s, err := db.CreateSecret(ctx, store.Secret{TeamID: teamA.ID, Name: "openai", Value: "sk-plain-value", Metadata: map[string]string{"env": "prod"}})
		if err != nil {
			t.Fatal(err)
		}
		if s.Version != 1 || s.Metadata["env"] != "prod" || s.ID[:4] != "sec_" || s.CreatedAt.IsZero() {
			t.Fatalf("created %+v", s)
		}
		var raw []byte
		if err := store.RawSQL(db).QueryRowContext(ctx, store.Q(db, `SELECT value FROM secrets WHERE id = ?`), s.ID).Scan(&raw); err != nil {
			t.Fatal(err)
		}
		if len(raw) == 0 || bytes.Contains(raw, []byte("sk-plain-value")) {
			t.Fatalf("value stored unsealed: %q", raw)
		}
		if v, err := db.SecretValue(ctx, teamA.ID, "openai"); err != nil || v != "sk-plain-value" {
			t.Fatalf("SecretValue = %q, %v", v, err)
		}
		if _, err := db.SecretValue(ctx, teamB.ID, "openai"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("another team's SecretValue: %v, want ErrNotFound", err)
		}
		if _, err := db.CreateSecret(ctx, store.Secret{TeamID: teamA.ID, Name: "openai", Value: "x"}); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("duplicate name: %v", err)
		}
		// Another team may use the same name.
		if _, err := db.CreateSecret(ctx, store.Secret{TeamID: teamB.ID, Name: "openai", Value: "x"}); err != nil {
			t.Fatal(err)
		}
		for _, key := range []string{s.ID, "openai"} {
			if got, err := db.GetSecret(ctx, teamA.ID, key); err != nil || got.ID != s.ID {
				t.Fatalf("get %s: %+v %v", key, got, err)
			}
		}
		if _, err := db.GetSecret(ctx, teamB.ID, s.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("other team's get: %v", err)
		}
		u, err := db.UpdateSecret(ctx, teamA.ID, s.ID, "sk-second", nil)
		if err != nil || u.Version != 2 || u.Metadata["env"] != "prod" {
			t.Fatalf("update: %+v %v", u, err)
		}
		if u, err = db.UpdateSecret(ctx, teamA.ID, s.ID, "sk-third", map[string]string{}); err != nil || u.Version != 3 || len(u.Metadata) != 0 {
			t.Fatalf("update metadata: %+v %v", u, err)
		}
		if _, err := db.UpdateSecret(ctx, teamB.ID, s.ID, "x", nil); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("other team's update: %v", err)
		}
		if _, err := db.CreateSecret(ctx, store.Secret{TeamID: teamA.ID, Name: "github", Value: "g"}); err != nil {
			t.Fatal(err)
		}
		page, err := db.ListSecrets(ctx, teamA.ID, "", 1)
		if err != nil || len(page) != 1 || page[0].Name != "github" {
			t.Fatalf("page 1: %+v %v", page, err)
		}
		if page, err = db.ListSecrets(ctx, teamA.ID, "github", 1); err != nil || len(page) != 1 || page[0].Name != "openai" {
			t.Fatalf("page 2: %+v %v", page, err)
		}
		if err := db.DeleteSecret(ctx, teamB.ID, s.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("other team's delete: %v", err)
		}
		if err := db.DeleteSecret(ctx, teamA.ID, s.ID); err != nil {
			t.Fatal(err)
		}
		if err := db.DeleteSecret(ctx, teamA.ID, s.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("delete again: %v", err)
		}
	})
}
