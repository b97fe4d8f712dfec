// Command ociregistry serves a private OCI registry (HTTP basic auth, a
// random password) on a loopback port for the e2b SDK's fromImage tests
// (template.test.mjs), holding one image: the tiny guest image's root file
// system as one layer. It prints one JSON line,
//
//	{"registry":"localhost:PORT","image":"localhost:PORT/e2b/busybox:1","username":"...","password":"..."}
//
// and serves until its stdin closes.
//
//	ociregistry IMAGES_DIR      # a data dir where `hearth image build` ran (needs root: a loop mount)
package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/hearth-sandbox/hearth/internal/buildcontext"
	"github.com/hearth-sandbox/hearth/internal/templatebuild/ocitest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ociregistry:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) != 2 {
		return fmt.Errorf("usage: ociregistry IMAGES_DIR")
	}
	layer, err := tinyLayer(filepath.Join(os.Args[1], "images", "tiny", "rootfs.ext4"))
	if err != nil {
		return err
	}
	secret := make([]byte, 12)
	if _, err := rand.Read(secret); err != nil {
		return err
	}
	user, pass := "e2b-test", "pw-"+hex.EncodeToString(secret)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() { _ = http.Serve(ln, ocitest.PrivateHandler(user, pass)) }()
	reg := fmt.Sprintf("localhost:%d", ln.Addr().(*net.TCPAddr).Port)
	ref := reg + "/e2b/busybox:1"
	if err := ocitest.Write(ref, &authn.Basic{Username: user, Password: pass}, v1.Config{Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}}, layer); err != nil {
		return err
	}
	if err := json.NewEncoder(os.Stdout).Encode(map[string]string{"registry": reg, "image": ref, "username": user, "password": pass}); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// tinyLayer is the root file system of the ext4 image at disk as a layer.
func tinyLayer(disk string) (v1.Layer, error) {
	mnt, err := os.MkdirTemp("", "ociregistry-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(mnt)
	if out, err := exec.Command("mount", "-o", "loop,ro", disk, mnt).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mount %s: %w: %s", disk, err, out)
	}
	var buf bytes.Buffer
	err = buildcontext.WriteTar(mnt, &buf, nil)
	if out, uerr := exec.Command("umount", mnt).CombinedOutput(); uerr != nil && err == nil {
		err = fmt.Errorf("umount %s: %w: %s", mnt, uerr, out)
	}
	if err != nil {
		return nil, err
	}
	return ocitest.BytesLayer(buf.Bytes())
}
