"""End-to-end identity benchmark on rendered multi-camera sites (``python -m evaluation.identity``).

Modules: ``sites`` renders site configs once into a cache; ``runs`` runs the pipeline's front end
over a site (``pipeline.app``) and replays the gallery stage over its windows per variant;
``truth`` maps tracks to ground-truth people by box IoU; ``protocol`` arranges enrolment and probes
through the gallery stage's own code; ``metrics`` holds the pure scoring functions;
``benchmark`` runs sites x variants and writes the table; ``records`` rebuilds windows from a
finished run's JSON Lines so that any run over a rendered site (the demo) is scored the same way;
``diagnose`` (``python -m evaluation.identity.diagnose``) says which tracks cost a variant its scores.

What the numbers mean
---------------------
Tracks. A pipeline track is mapped to the rendered person whose visible box overlaps it with
IoU >= 0.5 in most of its frames (at least half of them; otherwise it follows nobody and is left
out of every score). "Clothes" of a track: its visit's outfit index and whether it wears a coat.

Closed set (R1 / mAP, same and changed clothes). Each camera of a site in turn is the enrol
camera: each of its tracks is enrolled as its own gallery entry (all its windows' embeddings).
Every track of the other cameras whose person the enrol camera saw is a probe. R1: share of
probes whose nearest gallery track is their person. mAP: mean over probes of the average
precision of the ranked gallery tracks (every gallery track of the person is relevant). "same":
probes whose person the gallery holds in the probe's clothes, against the whole gallery.
"changed": probes whose person the gallery also holds in other clothes, against the gallery
without that person's tracks in the probe's clothes (the clothes-changing protocol of long-term
ReID benchmarks): only a look-independent cue (gait) can find them. Probes without an embedding
to search with count as misses (AP 0); "coverage" is the share that had one (the JSON also gives
R1 among those, ``rank1_covered``, and ``reachable``: the share whose person has a ranked gallery
track, both sides with an embedding, with R1 among those, ``rank1_reachable``). Pooled over sites
and enrol cameras; probe counts in brackets.

Scorers. system: the probe's windows pass through the gallery stage as in a run, and the final
window's candidate list is the ranking (what a track record reports). gait / appearance: every
window's embedding of that modality is searched with the gallery's own scorer (per-part
Euclidean + CarGait re-ranking for gait when configured, cosine for appearance); a gallery track's
score is its best calibrated score over the probe's windows (each scorer's own calibration puts
CarGait's and the plain metric's distances on one scale).

Open set (DIR at 1% FAR). Per enrol camera, two folds each leave half of the enrolled people out
of the gallery (even / odd ids): their probes, and probes of people the enrol camera never saw,
are never-enrolled probes. A probe is accepted when its nearest gallery distance is under a
threshold; the threshold is the largest that accepts at most 1% of the never-enrolled probes
(pooled over sites). DIR: share of enrolled probes accepted with the right person at rank 1.

Clean tracks (R1 same, DIR). The same closed-set and open-set scores with every probe and gallery
track left out that is on its person in fewer than ``clean_purity`` (0.9) of its frames: what the
matcher gives where the front end kept people apart. A track on two people walking together ranks
high against both of them, as a probe and as a gallery entry; the difference to the main columns is
what such tracks cost. A diagnostic beside the main scores, not in their place.

Auto-enrol links (P / R / F1, identities). The chain runs with ``gallery.auto_enrol=true`` on a
fresh gallery per site; a track's identity is its final window's decision. Over all pairs of
truth-mapped tracks of a site (same or different cameras): a pair is linked when both ended with
the same identity; precision = right links / links, recall = right links / pairs of the same
person, F1 their harmonic mean. identities: identities in the gallery after the run (summed over
sites) against the people seen; unnamed tracks: truth-mapped tracks that ended with no identity.
Link F1 / identities over orders (``--orders N``): the same replayed in N more orders of the
windows, each camera's clock shifted by a random few seconds (the same shifts for every variant);
mean (min-max) over the N + 1 orders. A difference between variants inside that spread is noise.
"""
