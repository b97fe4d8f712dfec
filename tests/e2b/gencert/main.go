// Command gencert writes a throwaway CA and a certificate for DOMAIN and
// *.DOMAIN into DIR (ca.pem, cert.pem, key.pem) for the E2B SDK suite's
// HTTPS run: go run ./tests/e2b/gencert DIR DOMAIN
package main

import (
	"fmt"
	"os"

	"github.com/hearth-sandbox/hearth/internal/sitetls/sitetlstest"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: gencert DIR DOMAIN")
		os.Exit(2)
	}
	ca, err := sitetlstest.NewCA()
	if err == nil {
		_, _, _, err = ca.WriteSite(os.Args[1], os.Args[2])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gencert:", err)
		os.Exit(1)
	}
}
