"""Reference tables shared by several test files (data, not logic).

MTPI2_KEYBOARD_COUNT_FORM: the count-form decision tables, n = 1..30, for targets 0.3, 0.25 and
0.2 - escalate if y <= E[n], de-escalate if y >= D[n], eliminate if y >= DU[n] (None: never at
that n) - from the project's reference notes (docs/reference_notes/mtpi2.md and keyboard.md):
computed from the published rules, not copied from a publication.  mTPI-2 (unit probability
mass) and Keyboard (strongest key) give identical tables at these targets with 0.05 margins.
"""
NA = None

MTPI2_KEYBOARD_COUNT_FORM = {
    0.3: ([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6,
           7, 7],
          [1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6, 7, 7, 7, 8, 8, 9, 9, 9, 10, 10,
           10, 11, 11],
          [NA, 2, 3, 3, 4, 4, 5, 5, 5, 6, 6, 7, 7, 8, 8, 8, 9, 9, 9, 10, 10, 11, 11, 11, 12, 12,
           12, 13, 13, 14]),
    0.25: ([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 5, 5,
            5, 5, 5],
           [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 8, 8, 8, 9, 9,
            9, 9],
           [NA, 2, 3, 3, 3, 4, 4, 4, 5, 5, 6, 6, 6, 7, 7, 7, 8, 8, 8, 9, 9, 9, 10, 10, 10, 11,
            11, 11, 12, 12]),
    0.2: ([0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3,
           4, 4],
          [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7,
           8, 8],
          [1, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 7, 7, 7, 7, 8, 8, 8, 8, 9, 9, 9, 9,
           10, 10]),
}
