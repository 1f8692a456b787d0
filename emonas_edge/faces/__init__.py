"""Finding and aligning faces: below export (INT8 calibration frames), the pipeline and ``crop-faces``.

All three must frame faces identically (a model calibrated or trained on other crops than it
sees at run time loses accuracy), so the one detector and aligner live here, under all of them.
"""
