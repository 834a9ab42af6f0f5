// Package datasets knows igpt's image datasets: where to download them, how
// to check the files, and how to read them into records.Image values.
//
// The registry (Lookup, Names) describes each dataset: its files with URLs,
// checksums and sizes, licence, citation, image size and split sizes. Fetch
// downloads one file atomically (resuming, retrying and verifying it; a
// server that cannot be reached is not retried and wraps ErrUnreachable),
// FetchFile tries a file's URL and then its mirrors, and Verify checks a
// local copy. Sniff tells what a local source holds (an image folder or an
// archive of one, or which binary dataset's files) from its names, so that
// the download stage can read it with the reader that fits.
//
// Reading is split in three steps so that a pipeline can run it in parallel:
//
//   - Inspect looks at a fetched source (a directory or an archive) once and
//     returns its Layout: the class names and a list of Units, each an
//     independently readable piece (a CIFAR batch file, an idx split, a class
//     folder, …). Units round-trip through encoding/json.
//   - ReadUnit streams the Items of one unit, in order: raw pixels for the
//     binary formats, or encoded PNG/JPEG bytes for image folders.
//   - Decode turns an Item into a records.Image, decoding and converting the
//     image and applying Options.ImageSize and Options.OnBad.
//
// Supported formats are the CIFAR-10 and CIFAR-100 binary archives, MNIST-style
// idx files (gzip-compressed or raw), the STL-10 binary archive and image
// folders (<split>/<class>/<image>) as a directory, .tar, .tar.gz/.tgz or .zip.
//
// Errors name the file (and archive member, record and byte offset) they are
// about and say what to do. A damaged file gives an error that wraps
// ErrCorrupt; a checksum mismatch wraps ErrChecksum.
package datasets
