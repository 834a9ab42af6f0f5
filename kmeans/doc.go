// Package kmeans holds the palette machinery of igpt: weighted k-means++
// seeding, weighted Lloyd iterations, mergeable partial sums for a
// distributed (Beam) Lloyd step, an exact colour histogram, and exact
// nearest-centre search, including a 2^24-entry lookup table for RGB.
//
// # Data layout
//
// Points are a flat row-major slice x of shape [N, D] (float32 or float64),
// with optional weights w of shape [N] (nil means every weight is 1).
// Centres are always float64, flat [K, D]. Every sum (centre sums, cluster
// weights, inertia, potentials) is accumulated in float64.
//
// # Determinism
//
// Work is split into chunks whose boundaries depend only on N (never on the
// number of goroutines); each chunk accumulates its own partial sums in a
// fixed order, and chunks are reduced in chunk order. Results are therefore
// bit-identical for a given input, seed and options whatever GOMAXPROCS or
// Options.Workers is.
//
// # Exactness
//
// Nearest-centre decisions are exact: distances are computed in float64 and
// ties go to the lowest centre index, as a brute-force search would decide.
// The Hamerly-style bounds used by Lloyd only ever skip a point when its
// assigned centre is strictly closer than every other centre, with a safety
// margin far above float64 rounding. For integer data with integer weights
// (pixels and colour histograms) every centre sum and cluster weight is an
// integer below 2^53 and hence exact, so weighted Lloyd over a colour
// histogram yields bit-identical centres to plain Lloyd over every pixel,
// from the same initial centres.
package kmeans
