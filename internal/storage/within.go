package storage

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// ErrOutside is returned (wrapped) by Within for a path, read from a file
// (a manifest's meta, a checkpoint store's LATEST, a unit list), that
// would lead outside the folder it must stay in.
var ErrOutside = errors.New("is not a path inside")

// LocalName reports whether name is a relative path that stays inside its
// folder, in both local and gs:// terms: not empty, not absolute, no ".."
// leading out, no backslash and no NUL.
func LocalName(name string) bool {
	return name != "" && !strings.ContainsAny(name, "\\\x00") && filepath.IsLocal(name) && !strings.HasPrefix(name, "/")
}

// Within is the one resolver of every path igpt reads from a file rather
// than from its command line: rel, relative to root, joined to root when
// it stays inside it. Anything else (absolute, "../…", a backslash) is an
// error wrapping ErrOutside that names rel and root; the caller adds which
// file and field held it.
func Within(root, rel string) (string, error) {
	if !LocalName(rel) {
		return "", fmt.Errorf("%q %w %s", rel, ErrOutside, root)
	}
	return Join(root, rel), nil
}

// ResolveUnder resolves every symlink of the local path p and returns the
// result when it lies inside resolvedRoot, a folder whose own links are
// already resolved; otherwise the resolved path and an error wrapping
// ErrOutside. The one containment check for links: image folders read by
// the workers and the files igpt serve sends.
func ResolveUnder(resolvedRoot, p string) (string, error) {
	q, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", err
	}
	if rel, err := filepath.Rel(resolvedRoot, q); err != nil || !filepath.IsLocal(rel) {
		return q, fmt.Errorf("%s %w %s", q, ErrOutside, resolvedRoot)
	}
	return q, nil
}
