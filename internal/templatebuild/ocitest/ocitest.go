// Package ocitest serves OCI images from an in-process registry
// (go-containerregistry's registry package) for tests: images are built
// by the test itself from tar entries or a directory tree.
package ocitest

import (
	"archive/tar"
	"bytes"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/hearth-sandbox/hearth/internal/buildcontext"
)

// Registry starts a plain-HTTP registry on a loopback port for the test's
// lifetime and returns its host:port.
func Registry(t testing.TB) string {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// PrivateRegistry is Registry behind HTTP basic auth: every request
// without the username and password gets a 401 with a Basic challenge,
// as a private registry answers.
func PrivateRegistry(t testing.TB, username, password string) string {
	t.Helper()
	srv := httptest.NewServer(PrivateHandler(username, password))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// PrivateHandler is an in-memory registry behind HTTP basic auth.
func PrivateHandler(username, password string) http.Handler {
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != username || p != password {
			w.Header().Set("WWW-Authenticate", `Basic realm="ocitest"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		}
		reg.ServeHTTP(w, r)
	})
}

// Entry is one tar entry of a layer.
type Entry struct {
	Name     string
	Body     string // regular files
	Mode     int64  // default 0644 (files), 0755 (dirs)
	Dir      bool
	Linkname string // symlink target
	UID, GID int
}

// Layer makes a layer from entries, in order.
func Layer(t testing.TB, entries ...Entry) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.Name, Mode: e.Mode, Uid: e.UID, Gid: e.GID}
		switch {
		case e.Dir:
			h.Typeflag = tar.TypeDir
			if h.Mode == 0 {
				h.Mode = 0o755
			}
		case e.Linkname != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, e.Linkname, 0o777
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.Body))
			if h.Mode == 0 {
				h.Mode = 0o644
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := io.WriteString(tw, e.Body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return bytesLayer(t, buf.Bytes())
}

// DirLayer makes one layer holding the directory tree dir (owners, modes
// and symlinks kept).
func DirLayer(t testing.TB, dir string) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	if err := buildcontext.WriteTar(dir, &buf, nil); err != nil {
		t.Fatal(err)
	}
	return bytesLayer(t, buf.Bytes())
}

func bytesLayer(t testing.TB, b []byte) v1.Layer {
	l, err := BytesLayer(b)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// BytesLayer is a layer of the tar stream b.
func BytesLayer(b []byte) (v1.Layer, error) {
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
}

// Push writes an image of layers with config cfg to ref (host:port/repo:tag).
func Push(t testing.TB, ref string, cfg v1.Config, layers ...v1.Layer) {
	t.Helper()
	if err := Write(ref, authn.Anonymous, cfg, layers...); err != nil {
		t.Fatal(err)
	}
}

// PushPrivate is Push to a PrivateRegistry.
func PushPrivate(t testing.TB, ref, username, password string, cfg v1.Config, layers ...v1.Layer) {
	t.Helper()
	if err := Write(ref, &authn.Basic{Username: username, Password: password}, cfg, layers...); err != nil {
		t.Fatal(err)
	}
}

// Write pushes a linux/amd64 image of layers with config cfg to ref.
func Write(ref string, auth authn.Authenticator, cfg v1.Config, layers ...v1.Layer) error {
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.Config = cfg
	cf.OS, cf.Architecture = "linux", "amd64"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		return err
	}
	return remote.Write(r, img, remote.WithAuth(auth))
}
