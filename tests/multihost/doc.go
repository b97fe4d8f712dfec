// Package multihost holds the multi-host end-to-end test (build tag vm;
// see main_test.go and docs/multihost.md).
package multihost
