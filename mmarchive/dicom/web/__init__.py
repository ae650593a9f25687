"""DICOMweb (PS3.18) over a DICOM store: QIDO-RS, WADO-RS and STOW-RS as a starlette ASGI application.

:func:`mmarchive.dicom.web.app.create_app` builds the application; ``mmarchive serve --http`` runs it with
uvicorn. See docs/dicomweb.md.
"""
