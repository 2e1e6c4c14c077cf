# The image every Airflow service runs: the official Airflow image plus this project's requirements.
# On Linux x86_64, PyPI's torch==2.13.0 is the CUDA build, which the GPU worker needs.
FROM apache/airflow:3.3.2-python3.11
COPY requirements.txt /requirements.txt
# Pin apache-airflow in the same call so pip never up- or downgrades the image's Airflow.
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /requirements.txt
