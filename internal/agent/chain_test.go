package agent

import (
	"context"
	"crypto/rand"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/hearth-sandbox/hearth/internal/auth"
	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// TestDiskSizeThroughTheChain: disk_size_mb given to the service arrives
// unchanged at the root-disk backend, through the real service, store
// (SQLite), RPC client, Connect server and sandbox manager; omitted, it is
// the default 20480 MiB.
func TestDiskSizeThroughTheChain(t *testing.T) {
	t.Parallel()
	e := newRPCEnv(t, "")
	ctx := context.Background()

	key := make([]byte, 32)
	rand.Read(key)
	sealer, err := store.NewAESSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(ctx, store.Options{DSN: filepath.Join(t.TempDir(), "hearth.db"), Sealer: sealer})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	pw, err := auth.NewPasswords(bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.NewTokens(key, "hearth", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := service.New(service.Deps{
		Store: db, Hosts: service.SingleHost{ID: "host1", Client: e.client}, Passwords: pw, Tokens: tokens,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.UpsertPlatformTemplate(ctx, store.Template{ID: "tiny", Name: "tiny", Kind: sbx.KindBase, VCPUs: 1, MemoryMB: 256, DiskSizeMB: sbx.DefaultDiskSizeMB}); err != nil {
		t.Fatal(err)
	}
	_, team, err := db.CreateUserWithTeam(ctx, store.User{ID: "00000000-0000-0000-0000-0000000000a1", Email: "a@example.com", PasswordHash: "x"}, "team")
	if err != nil {
		t.Fatal(err)
	}
	p := service.Principal{TeamID: team.ID, APIKeyID: "k"}

	size := 10240
	sb, err := svc.CreateSandbox(ctx, p, service.CreateSandboxInput{Template: "tiny", DiskSizeMB: &size})
	if err != nil {
		t.Fatal(err)
	}
	if got := e.h.disks.sizes[sb.ID]; got != 10240*MiB {
		t.Errorf("disk_size_mb 10240: backend got %d bytes", got)
	}
	sb2, err := svc.CreateSandbox(ctx, p, service.CreateSandboxInput{Template: "tiny"})
	if err != nil {
		t.Fatal(err)
	}
	if got := e.h.disks.sizes[sb2.ID]; got != sbx.DefaultDiskSizeMB*MiB {
		t.Errorf("default disk_size_mb: backend got %d bytes", got)
	}
	// The sandbox runs on the agent with the token the service issued.
	res, err := svc.Exec(ctx, p, sb.ID, service.ExecRequest{Cmd: "/bin/echo", Args: []string{"chain"}})
	if err != nil || res.Stdout != "chain\n" {
		t.Errorf("exec through the service: %+v, %v", res, err)
	}
}
