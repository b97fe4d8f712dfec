package volume

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	nfsc "github.com/willscott/go-nfs-client/nfs"
	"github.com/willscott/go-nfs-client/nfs/rpc"
)

// nfsMount serves exports on loopback and mounts export with a real NFSv3
// client (the protocol the guest kernel speaks).
func nfsMount(t *testing.T, exports []Export, export string) (*Server, *nfsc.Target) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Serve(l, exports)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	c, err := rpc.DialTCP("tcp", l.Addr().String(), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	m := nfsc.Mount{Client: c}
	tg, err := m.Mount(export, rpc.AuthNull)
	if err != nil {
		t.Fatalf("mount %s: %v", export, err)
	}
	return s, tg
}

// A sandbox's server exports only its volumes, and nothing a client
// sends (a name "..", a symlink planted in the volume pointing out, a
// path naming the other export) reaches a file outside the volume.
func TestNFSConfinement(t *testing.T) {
	base := t.TempDir()
	vol, other := filepath.Join(base, "v1", "data"), filepath.Join(base, "v2", "data")
	for _, d := range []string{vol, other} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	secret := filepath.Join(base, "v1", "secret")
	if err := os.WriteFile(secret, []byte("host-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(other, "theirs"), []byte("other-volume"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(vol, "abs-escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../secret", filepath.Join(vol, "rel-escape")); err != nil {
		t.Fatal(err)
	}
	_, tg := nfsMount(t, []Export{{Name: "vol0", Dir: vol}}, "/vol0")

	// Reads and writes inside work (the guest kernel asks ACCESS first).
	if m, err := tg.Access("/", 0x3f); err != nil || m != 0x3f {
		t.Fatalf("access to the root: %#x %v, want 0x3f", m, err)
	}
	w, err := tg.OpenFile("/new.txt", 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("from-the-client")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if b, err := os.ReadFile(filepath.Join(vol, "new.txt")); err != nil || string(b) != "from-the-client" {
		t.Fatalf("written file on the host: %q %v", b, err)
	}

	for _, p := range []string{"../secret", "../../v2/data/theirs", "abs-escape", "rel-escape", "../v1/secret"} {
		f, err := tg.Open(p)
		if err != nil {
			continue // refused: fine
		}
		b, err := io.ReadAll(f)
		f.Close()
		if strings.Contains(string(b), "secret") || strings.Contains(string(b), "other-volume") {
			t.Errorf("%s read %q from outside the volume", p, b)
		} else if err == nil && len(b) > 0 {
			t.Errorf("%s read %q, want a refusal", p, b)
		}
	}
	// The planted symlink is itself readable (the guest made it).
	if fi, _, err := tg.Lookup("abs-escape"); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("symlink lookup: %v %v", fi, err)
	}

	// Only this sandbox's exports mount.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Serve(l, []Export{{Name: "vol0", Dir: vol}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	for _, export := range []string{"/", "/vol1", "/vol0/..", "/" + other} {
		c, err := rpc.DialTCP("tcp", l.Addr().String(), false)
		if err != nil {
			t.Fatal(err)
		}
		m := nfsc.Mount{Client: c}
		if _, err := m.Mount(export, rpc.AuthNull); err == nil {
			t.Errorf("mount %q succeeded, want a refusal", export)
		}
		c.Close()
	}
}

// A handle a client got from one server works with the next server over
// the same volume (a resumed sandbox, a restarted agent): handles name
// (export, path), not server state.
func TestNFSHandlesOutliveTheServer(t *testing.T) {
	vol := t.TempDir()
	if err := os.MkdirAll(filepath.Join(vol, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vol, "a", "b", "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	exports := []Export{{Name: "vol0", Dir: vol}}
	s1, tg1 := nfsMount(t, exports, "/vol0")
	_, fh, err := tg1.Lookup("a/b/f")
	if err != nil {
		t.Fatal(err)
	}
	s1.Stop()
	_, tg2 := nfsMount(t, exports, "/vol0")
	attr, err := tg2.GetAttr(fh)
	if err != nil {
		t.Fatalf("old handle on a new server: %v", err)
	}
	if attr.Filesize != 1 {
		t.Fatalf("old handle names a file of %d bytes, want 1", attr.Filesize)
	}
	if _, err := tg2.GetAttr(append([]byte{0}, make([]byte, handleLen-1)...)); err == nil {
		t.Fatal("an unknown handle resolved")
	}
}
