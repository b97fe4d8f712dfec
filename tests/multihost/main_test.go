//go:build vm

// Package multihost checks issue 6 end to end: one control plane and three
// `hearth agent` processes, each in its own network namespace with its own
// address (internal/testnet), real microVMs (QEMU/TCG here).
//
// The control plane runs in the test process, assembled from the same
// parts as `hearth server` in fleet mode (store, service, API with
// /v1/admin/hosts, internal/fleet mounted at /v1/hosts/), listening on the
// test network's gateway. It needs root and guest images built by
// `hearth image build --data-dir $HEARTH_IMAGES_DIR`.
//
//	HEARTH_IMAGES_DIR=/var/tmp/hearth-dev go test -tags vm -v -count=1 ./tests/multihost
package multihost

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/image"
	"github.com/hearth-sandbox/hearth/internal/testnet"
)

var (
	hearthBin string // built in TestMain
	imagesDir string
	skip      string // why the suite cannot run here
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	imagesDir = os.Getenv("HEARTH_IMAGES_DIR")
	switch {
	case imagesDir == "":
		skip = "set HEARTH_IMAGES_DIR to a data dir with built images (hearth image build --data-dir DIR)"
	case os.Geteuid() != 0:
		skip = "needs root (network namespaces, tap devices)"
	case testnet.Unsupported() != "":
		skip = "test network: " + testnet.Unsupported()
	}
	if skip == "" {
		if _, err := os.Stat(image.KernelPath(imagesDir)); err != nil {
			skip = fmt.Sprintf("no guest kernel in %s: run hearth image build --data-dir %s", imagesDir, imagesDir)
		}
	}
	if skip != "" {
		return m.Run() // tests skip with the reason
	}
	dir, err := os.MkdirTemp("", "hearth-multihost-bin-")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer os.RemoveAll(dir)
	hearthBin = filepath.Join(dir, "hearth")
	build := exec.Command("go", "build", "-o", hearthBin, "../../cmd/hearth")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Println("build hearth:", err)
		return 1
	}
	return m.Run()
}
