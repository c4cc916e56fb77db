package docs

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// conformanceRow is one row of a table in conformance.md.
type conformanceRow struct {
	line     int
	anchor   string
	name     string   // the row's displayed short name
	enforced []string // code spans of the "Enforced in" column
	tests    []string // code spans of the "Proven by" column
}

var (
	rowStart  = regexp.MustCompile(`^\| <a id="([a-z0-9-]+)"></a>` + "`([^`]*)`" + ` \|`)
	codeSpan  = regexp.MustCompile("`([^`]+)`")
	citation  = regexp.MustCompile(`conformance\.md#([A-Za-z0-9_-]+)`)
	checkName = regexp.MustCompile(`^(dpop|at-jwt)-[a-z0-9-]+$`)
)

// readConformance parses the rows of conformance.md. A row has five cells: the anchored
// short name, the rule, its source, where it is enforced and the tests that prove it.
func readConformance(t *testing.T) []conformanceRow {
	t.Helper()
	raw, err := os.ReadFile("conformance.md")
	if err != nil {
		t.Fatal(err)
	}
	var rows []conformanceRow
	for i, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "| <a id=") {
			continue
		}
		m := rowStart.FindStringSubmatch(line)
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		if m == nil || len(cells) != 5 {
			t.Errorf("conformance.md:%d: a row is | <a id=\"name\"></a>`name` | rule | source | enforced in | proven by |, got %q", i+1, line)
			continue
		}
		rows = append(rows, conformanceRow{
			line: i + 1, anchor: m[1], name: m[2],
			enforced: spans(cells[3]), tests: spans(cells[4]),
		})
	}
	if len(rows) == 0 {
		t.Fatal("conformance.md has no rows")
	}
	return rows
}

func spans(cell string) []string {
	var out []string
	for _, m := range codeSpan.FindAllStringSubmatch(cell, -1) {
		out = append(out, m[1])
	}
	return out
}

// repoIndex is what the repository's Go files declare.
type repoIndex struct {
	decls map[string]map[string]bool // file (slash path from the root) → top-level names, Type.Method for methods
	tests map[string]map[string]bool // package directory → Test/Fuzz/Example functions of its _test.go files
	// checks are the string literals of the dpop package's non-test files that have the form of
	// a check name (dpop-…, at-jwt-…): each names the conformance row a refusal failed.
	checks map[string]token.Position
	// citations are the conformance.md#<row> references of every Go and JavaScript file.
	citations map[string][]string
}

// indexRepo returns the index of the repository at root, built once per test binary (parsing
// every Go file is the bulk of these tests' time); the tests only read it.
func indexRepo(t *testing.T, root string) *repoIndex {
	t.Helper()
	indexMu.Lock()
	defer indexMu.Unlock()
	if idx := indexes[root]; idx != nil {
		return idx
	}
	idx, err := buildRepoIndex(root)
	if err != nil {
		t.Fatal(err)
	}
	indexes[root] = idx
	return idx
}

var (
	indexMu sync.Mutex
	indexes = map[string]*repoIndex{} // by root
)

// buildRepoIndex parses the Go files (and reads the JavaScript files) under root.
func buildRepoIndex(root string) (*repoIndex, error) {
	idx := &repoIndex{
		decls:     map[string]map[string]bool{},
		tests:     map[string]map[string]bool{},
		checks:    map[string]token.Position{},
		citations: map[string][]string{},
	}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || name == "node_modules" || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		switch filepath.Ext(name) {
		case ".js", ".mjs":
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			idx.cite(rel, string(src))
			return nil
		case ".go":
		default:
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
		if err != nil {
			return err
		}
		for _, cg := range f.Comments {
			idx.cite(rel, cg.Text())
		}
		decls := map[string]bool{}
		idx.decls[rel] = decls
		isTest := strings.HasSuffix(name, "_test.go")
		dir := filepath.ToSlash(filepath.Dir(rel))
		for _, decl := range f.Decls {
			switch d := decl.(type) {
			case *ast.FuncDecl:
				decls[funcName(d)] = true
				if isTest && d.Recv == nil {
					if idx.tests[dir] == nil {
						idx.tests[dir] = map[string]bool{}
					}
					idx.tests[dir][d.Name.Name] = true
				}
			case *ast.GenDecl:
				for _, spec := range d.Specs {
					switch s := spec.(type) {
					case *ast.TypeSpec:
						decls[s.Name.Name] = true
					case *ast.ValueSpec:
						for _, n := range s.Names {
							decls[n.Name] = true
						}
					}
				}
			}
		}
		if dir == "dpop" && !isTest {
			ast.Inspect(f, func(n ast.Node) bool {
				if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					if s, err := strconv.Unquote(lit.Value); err == nil && checkName.MatchString(s) {
						idx.checks[s] = fset.Position(lit.Pos())
					}
				}
				return true
			})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", root, err)
	}
	return idx, nil
}

func (idx *repoIndex) cite(file, text string) {
	for _, m := range citation.FindAllStringSubmatch(text, -1) {
		idx.citations[m[1]] = append(idx.citations[m[1]], file)
	}
}

// funcName is the name conformance.md uses for a function: Name, or Type.Method.
func funcName(d *ast.FuncDecl) string {
	if d.Recv == nil || len(d.Recv.List) == 0 {
		return d.Name.Name
	}
	t := d.Recv.List[0].Type
	if s, ok := t.(*ast.StarExpr); ok {
		t = s.X
	}
	switch r := t.(type) {
	case *ast.IndexExpr: // generic receiver T[P]
		t = r.X
	case *ast.IndexListExpr:
		t = r.X
	}
	if id, ok := t.(*ast.Ident); ok {
		return id.Name + "." + d.Name.Name
	}
	return d.Name.Name
}

// TestConformanceRowsPointAtCodeAndTestsThatExist: every file and function a row says enforces
// its rule is declared in that file, and every test it says proves the rule exists in that
// package; rows are unique and each names at least one place and one test.
func TestConformanceRowsPointAtCodeAndTestsThatExist(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found above docs/: %v", err)
	}
	rows := readConformance(t)
	idx := indexRepo(t, root)
	seen := map[string]int{}
	for _, r := range rows {
		at := "conformance.md:" + strconv.Itoa(r.line) + " (" + r.anchor + ")"
		if prev, dup := seen[r.anchor]; dup {
			t.Errorf("%s: row name already used on line %d", at, prev)
		}
		seen[r.anchor] = r.line
		if r.name != r.anchor {
			t.Errorf("%s: the row shows %q, its anchor is %q", at, r.name, r.anchor)
		}
		if len(r.enforced) == 0 || !strings.HasSuffix(r.enforced[0], ".go") {
			t.Errorf("%s: Enforced in must start with a .go file, got %q", at, r.enforced)
			continue
		}
		file, names := "", 0
		for _, s := range r.enforced {
			if strings.HasSuffix(s, ".go") {
				if names == 0 && file != "" {
					t.Errorf("%s: no function named in %s", at, file)
				}
				file, names = s, 0
				if idx.decls[file] == nil {
					t.Errorf("%s: file %s does not exist", at, file)
				}
				continue
			}
			names++
			if decls := idx.decls[file]; decls != nil && !decls[s] {
				t.Errorf("%s: %s declares no %s", at, file, s)
			}
		}
		if names == 0 {
			t.Errorf("%s: no function named in %s", at, file)
		}
		if len(r.tests) == 0 {
			t.Errorf("%s: no test proves the rule", at)
		}
		for _, s := range r.tests {
			i := strings.LastIndexByte(s, '.')
			if i < 0 {
				t.Errorf("%s: test %q is not package.TestName", at, s)
				continue
			}
			dir, name := s[:i], s[i+1:]
			if !strings.HasPrefix(name, "Test") && !strings.HasPrefix(name, "Fuzz") && !strings.HasPrefix(name, "Example") {
				t.Errorf("%s: %q is not a test, fuzz target or example", at, s)
			}
			if !idx.tests[dir][name] {
				t.Errorf("%s: package %s has no %s", at, dir, name)
			}
		}
	}
}

// TestCitedConformanceRowsExist: a code comment citing docs/conformance.md#<row>, and a DPoP
// check name (the row a refused proof failed), name a row that exists.
func TestCitedConformanceRowsExist(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	rows := readConformance(t)
	idx := indexRepo(t, root)
	anchors := map[string]bool{}
	for _, r := range rows {
		anchors[r.anchor] = true
	}
	for row, files := range idx.citations {
		if !anchors[row] {
			files := slices.Compact(slices.Sorted(slices.Values(files))) // a copy: the index is shared
			t.Errorf("%s cite conformance.md#%s, which is no row", strings.Join(files, ", "), row)
		}
	}
	if len(idx.checks) == 0 {
		t.Error("no DPoP check names found in dpop/: has the package moved?")
	}
	for name, pos := range idx.checks {
		if !anchors[name] {
			t.Errorf("%s: check name %q is no conformance row", pos, name)
		}
	}
}

// TestSourcesCiteOnlyWhatTheRepoHolds: rules are cited by specification section or by a row
// of conformance.md, never by a checklist id or a document that is not in this repository,
// and no test is named after an issue instead of the behaviour it checks.
func TestSourcesCiteOnlyWhatTheRepoHolds(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	// Built from parts so that this file does not match itself.
	prefixes := []string{"DS", "DC", "PK", "IS", "MD", "ID"}
	checklistID := regexp.MustCompile(`\b(` + strings.Join(prefixes, "|") + `)-[0-9]+\b`)
	// mayCite is a quick test before the regular expression (most lines have no "XX-").
	mayCite := func(line string) bool {
		return slices.ContainsFunc(prefixes, func(p string) bool { return strings.Contains(line, p+"-") })
	}
	outsideDoc := "reference" + ".md"
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		switch filepath.Ext(path) {
		case ".go", ".js", ".mjs", ".md", ".yaml", ".yml", ".json", ".html", ".css":
		default:
			if d.Name() != "Makefile" {
				return nil
			}
		}
		if d.Name() == "package-lock.json" {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		for i, line := range strings.Split(string(src), "\n") {
			if filepath.Ext(path) != ".md" && mayCite(line) {
				if m := checklistID.FindString(line); m != "" {
					t.Errorf("%s:%d cites %q, an id defined nowhere in this repository: cite the RFC/OIDC section or a conformance.md row", rel, i+1, m)
				}
			}
			if strings.Contains(line, outsideDoc) {
				t.Errorf("%s:%d cites %s, which is not part of this repository", rel, i+1, outsideDoc)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for dir, tests := range indexRepo(t, root).tests {
		for name := range tests {
			if strings.Contains(name, "Issue") {
				t.Errorf("%s: test %s is named after an issue, not after the behaviour it checks", dir, name)
			}
		}
	}
}
