"""The batch build's stages, in Spark and NumPy: session, datasets and readers (``datasets``, ``adapters``,
``readers``), the validation rules shared with the stream (``rules``), the Spark transforms, the embedding UDF
(``embedding``), KMeans (``cluster``), ALS (``als``), item-item EASE (``itemitem``), the FAISS index
(``faiss_index``) and pandas interactions (``interactions``). Imports only ``core``; never the chat."""
