// Package image builds the control-plane container image without a
// container daemon: one layer with the static hearth binary, CA
// certificates and a data directory, on an empty base.
package image

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Options for Write.
type Options struct {
	Binary string // statically linked hearth (CGO_ENABLED=0)
	Tag    string // e.g. hearth:0.1.0
	Out    string // docker-archive tarball
	// CACerts is the CA bundle copied in (PostgreSQL over TLS, ACME); default
	// the build machine's /etc/ssl/certs/ca-certificates.crt.
	CACerts string
}

// UID the server runs as inside the image (no root needed: it runs no VMs).
const UID = 65532

// Write builds the image and writes it to Out.
func Write(o Options) error {
	if o.CACerts == "" {
		o.CACerts = "/etc/ssl/certs/ca-certificates.crt"
	}
	layer, err := rootLayer(o)
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg := cf.Config
	cfg.Entrypoint = []string{"/usr/bin/hearth", "server"}
	cfg.Env = []string{"HEARTH_LISTEN=0.0.0.0:3000", "HEARTH_DATA_DIR=/var/lib/hearth", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"}
	cfg.User = fmt.Sprintf("%d:%d", UID, UID)
	cfg.WorkingDir = "/var/lib/hearth"
	cfg.ExposedPorts = map[string]struct{}{"3000/tcp": {}}
	cfg.Volumes = map[string]struct{}{"/var/lib/hearth": {}}
	cfg.Labels = map[string]string{"org.opencontainers.image.source": "https://github.com/hearth-sandbox/hearth", "org.opencontainers.image.title": "hearth control plane"}
	cf = cf.DeepCopy()
	cf.Config, cf.Architecture, cf.OS = cfg, "amd64", "linux"
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()} // reproducible
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	ref, err := name.NewTag(o.Tag)
	if err != nil {
		return fmt.Errorf("--tag: %w", err)
	}
	return tarball.WriteToFile(o.Out, ref, img)
}

// rootLayer is the image's file system as one tar layer.
func rootLayer(o Options) (v1.Layer, error) {
	bin, err := os.ReadFile(o.Binary)
	if err != nil {
		return nil, fmt.Errorf("--binary: %w", err)
	}
	certs, err := os.ReadFile(o.CACerts)
	if err != nil {
		return nil, fmt.Errorf("CA certificates: %w", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	dir := func(name string, uid, mode int) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: int64(mode), Uid: uid, Gid: uid, ModTime: epoch})
	}
	file := func(name string, data []byte, mode int) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: int64(mode), Size: int64(len(data)), ModTime: epoch}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	steps := []func() error{
		func() error { return dir("etc/", 0, 0o755) },
		func() error { return dir("etc/ssl/", 0, 0o755) },
		func() error { return dir("etc/ssl/certs/", 0, 0o755) },
		func() error { return file("etc/ssl/certs/ca-certificates.crt", certs, 0o644) },
		// A passwd entry so the user has a name and a home.
		func() error {
			return file("etc/passwd", fmt.Appendf(nil, "root:x:0:0:root:/root:/sbin/nologin\nhearth:x:%d:%d:hearth:/var/lib/hearth:/sbin/nologin\n", UID, UID), 0o644)
		},
		func() error { return file("etc/group", fmt.Appendf(nil, "root:x:0:\nhearth:x:%d:\n", UID), 0o644) },
		func() error { return dir("tmp/", 0, 0o1777) },
		func() error { return dir("usr/", 0, 0o755) },
		func() error { return dir("usr/bin/", 0, 0o755) },
		func() error { return file("usr/bin/hearth", bin, 0o755) },
		func() error { return dir("var/", 0, 0o755) },
		func() error { return dir("var/lib/", 0, 0o755) },
		func() error { return dir("var/lib/hearth/", UID, 0o700) },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
}
