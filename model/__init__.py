"""Mars models.

Glossary used in every docstring:
    B       batch size
    A       anchor points over all levels (sum of H_i * W_i; 8400 at 640x640)
    nc      number of classes
    M       max boxes per image (labels padded to M)
    regMax  DFL bins per box side (16)
    w, r, n width multiple, last-stage ratio, bottlenecks of the phase
"""
