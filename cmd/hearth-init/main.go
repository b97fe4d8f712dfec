// Command hearth-init is the microVM's init: /init of the initramfs and
// /sbin/init of every hearth root filesystem. Build it static:
//
//	CGO_ENABLED=0 go build -trimpath -ldflags=-s -o hearth-init ./cmd/hearth-init
//
// See internal/guestinit for the boot design.
package main

import "github.com/hearth-sandbox/hearth/internal/guestinit"

func main() { guestinit.Main() }
