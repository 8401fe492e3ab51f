package fcgi_test

import (
	"fmt"
	"go/ast"
	"go/constant"
	"go/doc"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDefaultsDocumented checks that the documentation of each field
// with a default in internal/defaults states that default's value, so
// that a changed default cannot leave its field's doc behind.
func TestDefaultsDocumented(t *testing.T) {
	fset := token.NewFileSet()
	files := parseFiles(t, fset, "internal/defaults/*.go", 0)
	conf := types.Config{Importer: importer.Default()}
	pkg, err := conf.Check("defaults", fset, files, nil)
	if err != nil {
		t.Fatal(err)
	}
	dp, err := doc.NewFromFiles(fset, parseFiles(t, fset, "*.go", parser.ParseComments), "github.com/fcgikit/fcgi")
	if err != nil {
		t.Fatal(err)
	}
	fieldDocs := map[string]string{}
	for _, typ := range dp.Types {
		st, ok := typ.Decl.Specs[0].(*ast.TypeSpec).Type.(*ast.StructType)
		if !ok {
			continue
		}
		for _, f := range st.Fields.List {
			for _, n := range f.Names {
				fieldDocs[typ.Name+n.Name] = strings.Join(strings.Fields(f.Doc.Text()), " ")
			}
		}
	}

	zero := regexp.MustCompile(`Zero means ([^;]*)`)
	names := pkg.Scope().Names()
	if len(names) < 20 {
		t.Fatalf("only %d defaults found", len(names))
	}
	for _, name := range names {
		c, ok := pkg.Scope().Lookup(name).(*types.Const)
		if !ok {
			continue
		}
		text, ok := fieldDocs[name]
		if !ok {
			t.Errorf("defaults.%s: no field %s", name, name)
			continue
		}
		want := formatDefault(name, c.Val())
		m := zero.FindStringSubmatch(text)
		if m == nil || !regexp.MustCompile(`(^|\W)`+regexp.QuoteMeta(want)+`(\W|$)`).MatchString(m[1]) {
			t.Errorf("the doc of %s does not say \"Zero means %s\":\n%s", name, want, text)
		}
	}
}

// formatDefault writes a default as the docs do: 1 minute, 30 s, 64 KiB,
// 10000.
func formatDefault(name string, v constant.Value) string {
	n, _ := constant.Int64Val(v)
	switch {
	case strings.HasSuffix(name, "Timeout") || strings.HasSuffix(name, "Cooldown") || strings.HasSuffix(name, "Interval"):
		d := time.Duration(n)
		switch {
		case d == time.Minute:
			return "1 minute"
		case d%time.Minute == 0:
			return fmt.Sprintf("%d minutes", d/time.Minute)
		default:
			return fmt.Sprintf("%d s", d/time.Second)
		}
	case strings.HasSuffix(name, "Bytes") || strings.HasSuffix(name, "Buffer"):
		switch {
		case n%(1<<20) == 0:
			return fmt.Sprintf("%d MiB", n>>20)
		case n%(1<<10) == 0:
			return fmt.Sprintf("%d KiB", n>>10)
		}
	}
	return fmt.Sprint(n)
}

// parseFiles parses the files matching pattern, tests left out.
func parseFiles(t *testing.T, fset *token.FileSet, pattern string, mode parser.Mode) []*ast.File {
	t.Helper()
	names, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, mode)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	return files
}
