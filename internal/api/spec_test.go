package api

import (
	"slices"
	"strings"
	"testing"
)

// TestSpecMatchesRoutes: the route table and openapi.yaml list exactly the
// same operations.
func TestSpecMatchesRoutes(t *testing.T) {
	t.Parallel()
	doc := loadSpec(t)
	s := &server{}
	var inCode, inSpec []string
	for _, rt := range s.routes() {
		inCode = append(inCode, rt.method+" "+rt.path)
	}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			inSpec = append(inSpec, strings.ToUpper(method)+" "+path)
		}
	}
	slices.Sort(inCode)
	slices.Sort(inSpec)
	for _, r := range inCode {
		if !slices.Contains(inSpec, r) {
			t.Errorf("route %s is not in openapi.yaml", r)
		}
	}
	for _, r := range inSpec {
		if !slices.Contains(inCode, r) {
			t.Errorf("openapi.yaml has %s, the router does not", r)
		}
	}
	if len(inCode) < 20 {
		t.Fatalf("only %d routes: table broken?", len(inCode))
	}
}
