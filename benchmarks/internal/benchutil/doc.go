// Package benchutil holds what the benchmark programs share: an nginx
// launcher, a wrk runner, and the interleaving and median helpers that
// keep outside load from favouring one contender.
package benchutil
