"""DICOM as an adapter over the generic object store.

This package turns Part 10 files into store objects and back, and keeps the patient / study / series /
instance catalog that DICOMweb (QIDO-RS) and DIMSE (C-FIND) style queries run against. It is the only
package that imports pydicom; the core store (:mod:`mmarchive.store`, :mod:`mmarchive.pack`,
:mod:`mmarchive.index`) knows nothing of DICOM and stays usable without it.
"""
