package fcgi_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExportedNamesDocumented fails for an exported name of the library's
// packages that has no doc comment: the comment is the contract a user
// reads, and staticcheck only checks the form of comments that exist.
func TestExportedNamesDocumented(t *testing.T) {
	for _, dir := range []string{".", "internal/wire"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		fset := token.NewFileSet()
		for _, name := range files {
			if strings.HasSuffix(name, "_test.go") {
				continue
			}
			src, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			f, err := parser.ParseFile(fset, name, src, parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			for _, decl := range f.Decls {
				checkDecl(t, fset, decl)
			}
		}
	}
}

func checkDecl(t *testing.T, fset *token.FileSet, decl ast.Decl) {
	switch d := decl.(type) {
	case *ast.FuncDecl:
		if !d.Name.IsExported() || d.Recv != nil && !exportedRecv(d.Recv) {
			return
		}
		if d.Doc != nil {
			if !strings.HasPrefix(d.Doc.Text(), d.Name.Name+" ") {
				t.Errorf("%s: the doc comment of %s does not start with its name", fset.Position(d.Pos()), d.Name)
			}
			return
		}
		if d.Recv != nil && !exportedRecv(d.Recv) {
			return
		}
		t.Errorf("%s: %s has no doc comment", fset.Position(d.Pos()), d.Name)
		return
	case *ast.GenDecl:
		for _, spec := range d.Specs {
			switch s := spec.(type) {
			case *ast.TypeSpec:
				if !s.Name.IsExported() {
					continue
				}
				if d.Doc == nil && s.Doc == nil {
					t.Errorf("%s: type %s has no doc comment", fset.Position(s.Pos()), s.Name)
				}
				// Options are fields: each says what its zero value means.
				if st, ok := s.Type.(*ast.StructType); ok {
					for _, fld := range st.Fields.List {
						for _, n := range fld.Names {
							if n.IsExported() && fld.Doc == nil && fld.Comment == nil {
								t.Errorf("%s: field %s.%s has no doc comment", fset.Position(n.Pos()), s.Name, n)
							}
						}
					}
				}
			case *ast.ValueSpec:
				for _, n := range s.Names {
					// A name in a documented group is covered by the
					// group's comment.
					if n.IsExported() && d.Doc == nil && s.Doc == nil && s.Comment == nil {
						t.Errorf("%s: %s has no doc comment", fset.Position(n.Pos()), n)
					}
				}
			}
		}
	}
}

func exportedRecv(recv *ast.FieldList) bool {
	typ := recv.List[0].Type
	if star, ok := typ.(*ast.StarExpr); ok {
		typ = star.X
	}
	if idx, ok := typ.(*ast.IndexExpr); ok {
		typ = idx.X
	}
	id, ok := typ.(*ast.Ident)
	return ok && id.IsExported()
}
